"""Where a training batch of LightGCN and AlphaRec spends its time: torch.profiler over a few batches (forward,
backward, optimiser step, batch sampling), grouped by operator, and the machine's dense fp32 matmul rate for
comparison (AlphaRec's MLP is dense matmuls over every user and item). Run alone.

    python bench/profile_cf.py --dataset runs/bench-scaling/synth-1000000-seed1 [--batches 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def profile(model_name: str, data, features, batches: int) -> tuple[str, float]:
    from lmrec.models.base import get_model

    model = get_model(model_name, "cf")(**({"features": features} if model_name == "alpharec" else {}))
    model.prepare(data, seed=2024)
    config = model.train_config({"progress": False})
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    model.set_training(True)
    stream = itertools.chain.from_iterable(model.batches(np.random.default_rng(0), config.batch_size)
                                           for _ in itertools.count())

    def step() -> None:
        with torch.profiler.record_function("sample batch"):
            batch = next(stream)
        optimizer.zero_grad()
        with torch.profiler.record_function("forward (loss)"):
            loss = model.loss(batch)
        with torch.profiler.record_function("backward"):
            loss.backward()
        with torch.profiler.record_function("optimizer step"):
            optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(batches):
            step()
    per_batch = (time.perf_counter() - start) / batches
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40)
    return table, per_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "profile_cf.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from recbole_compare import machine

    from lmrec.data.registry import DataRef
    from lmrec.io import atomic_write
    from lmrec.text import CachedEncoder, get_encoder

    data = DataRef.of(args.dataset).load()
    features = CachedEncoder(get_encoder("minilm")).encode(data.catalog.text(("title",)), progress=False)
    gflops = matmul_gflops()
    lines = [f"# Profile of a training batch — {datetime.date.today().isoformat()}", "",
             f"Machine: {machine()}, {args.threads} torch thread(s); load average {os.getloadavg()[0]:.2f}. "
             f"Data: {args.dataset} ({data.n_users} users, {data.n_items} items, {data.train.nnz} training "
             f"interactions). Dense fp32 matmul (2048²): {gflops:.0f} GFLOP/s.", ""]
    for name in ("lightgcn", "alpharec"):
        table, per_batch = profile(name, data, features, args.batches)
        batches_per_epoch = max(1, round(data.train.nnz / 4096))
        lines += [f"## {name}: {1000 * per_batch:.0f} ms per batch (profiled), ≈ {per_batch * batches_per_epoch:.1f} s "
                  f"per epoch of {batches_per_epoch} batches", "", "```", table, "```", ""]
        print(lines[-5], flush=True)
    atomic_write(args.out, lambda f: f.write("\n".join(lines)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
