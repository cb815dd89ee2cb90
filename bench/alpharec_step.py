"""One AlphaRec training step, two ways, on real datasets with their MiniLM title features:

    dense       MLP([z_users; z_items]) with z_users = P z_items computed once (the paper's form)
    via items   the MLP's first (affine) layer on the items only, the users' rows as P (W z_items) + b
                (the same numbers; tests/models/test_cf_models.py checks values and gradients)

AlphaRec.embed takes "via items" where a rule (users·d > 16·edges) expects it to be faster; the table shows its pick.

A step = both embeddings, LightGCN propagation, InfoNCE over one batch (``--batch`` rows, 256 shared negatives),
forward and backward. Median of ``--repeats`` steps after one warm-up, the two ways alternating. Run alone (other
processes on the cores distort the figures).

    LMREC_DATA=../shared/data python bench/alpharec_step.py [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("movielens-100k", "amazon-industrial-scientific-2018", "movielens-latest-small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "alpharec_step.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from common import machine, write_lines

    from lmrec.data.registry import load_dataset
    from lmrec.models.cf.alpharec import AlphaRec

    lines = [f"# AlphaRec training step — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); load average (1 min) "
             f"{os.getloadavg()[0]:.2f}. A step: embeddings, propagation (2 layers), InfoNCE over {args.batch} rows "
             f"and 256 shared negatives, forward and backward; median of {args.repeats}, alternating.", "",
             "| dataset | users | items | train edges | MLP (d → hidden → 64) | dense ms | via items ms | speed-up | "
             "embed() takes |", "|---|---|---|---|---|---|---|---|---|"]
    for name in args.datasets:
        data = load_dataset(name)
        model = AlphaRec()
        model.prepare(data, seed=0)
        ms = _median_ms(model, args.batch, args.repeats)
        first = model.net.f[0]
        lines.append(f"| {name} | {data.n_users} | {data.n_items} | {data.train.nnz} | {first.in_features} → "
                     f"{first.out_features} → {model.config.emb_dim} | {ms['dense']:.0f} | {ms['via items']:.0f} | "
                     f"{ms['dense'] / ms['via items']:.2f}x | {'via items' if model.users_via_items else 'dense'} |")
        print(lines[-1], flush=True)
    lines.append("")
    write_lines(args.out, lines)


def _median_ms(model: Any, batch_size: int, repeats: int) -> dict[str, float]:
    """Median ms of a training step (the loss on one batch, forward and backward) for each way of embedding."""
    batch = next(model.batches(np.random.default_rng(0), batch_size))
    ways = {"dense": lambda: model.represent(model.z_users, model.z_items, model.adj),
            "via items": lambda: model.propagated(*model.net.of_profiles(model.profile, model.profile_t,
                                                                         model.z_items, model.empty_users),
                                                  model.adj)}

    def step(embed: Callable[[], tuple[torch.Tensor, ...]]) -> float:
        model.net.zero_grad()
        model.embed = embed  # the loss reads the embeddings through embed()
        start = time.perf_counter()
        model.loss(batch).backward()
        return time.perf_counter() - start

    for embed in ways.values():
        step(embed)
    times: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(repeats):  # alternating, so load changes hit both
        for way, embed in ways.items():
            times[way].append(step(embed))
    return {way: 1000 * statistics.median(t) for way, t in times.items()}


if __name__ == "__main__":
    main()
