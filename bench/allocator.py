"""Training batches with glibc's default allocator settings against lmrec.allocator.keep_freed_memory (large blocks
from the heap, never trimmed), each in a fresh process (the setting is process-wide), the two alternating.

A batch = the model's loss on one training batch, forward and backward (median of ``--batches`` after one warm-up).
Run alone: other processes on the cores distort the figures.

    LMREC_DATA=../shared/data python bench/allocator.py [--threads 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CASES = (("bc_loss", "movielens-100k"), ("sgl", "amazon-industrial-scientific-2018"),
         ("xsimgcl", "amazon-industrial-scientific-2018"), ("rlmrec", "amazon-industrial-scientific-2018"),
         ("alpharec", "amazon-industrial-scientific-2018"), ("lightgcn", "movielens-latest-small"))
WAYS = ("glibc defaults", "keep_freed_memory")


def child(model: str, dataset: str, keep: bool, threads: int, batches: int) -> None:
    """Print the median seconds of a training batch as JSON (run in a fresh process)."""
    import numpy as np
    import torch

    from lmrec.allocator import keep_freed_memory
    from lmrec.data.registry import load_dataset
    from lmrec.models.base import get_model

    if keep:
        keep_freed_memory()
    torch.set_num_threads(threads)
    recommender = get_model(model, "cf")()
    recommender.prepare(load_dataset(dataset), seed=0)
    recommender.net.train()
    if hasattr(recommender, "epoch"):  # BC Loss: past its popularity warm-up epochs
        recommender.epoch = 10
    rng = np.random.default_rng(0)
    data = [b for _, b in zip(range(batches + 1), recommender.batches(rng, recommender.train_config().batch_size))]
    times = []
    for batch in data[:1] + data[: batches]:
        recommender.net.zero_grad()
        start = time.perf_counter()
        recommender.loss(batch).backward()
        times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": statistics.median(times[1:])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both ways per model")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "allocator.md")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "DATASET", "KEEP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, dataset, keep = args.child
        return child(model, dataset, keep == "1", args.threads, args.batches)

    from common import machine, write_lines


    lines = [f"# Allocator settings — {datetime.date.today()}", "",
             f"Machine: {machine()}; {args.threads} thread(s); load average (1 min) {os.getloadavg()[0]:.2f}. "
             f"A batch: the model's default batch size, loss forward and backward, median of {args.batches}; each "
             f"way in a fresh process, {args.rounds} alternating rounds (the median of the rounds).", "",
             "| model | dataset | glibc defaults ms | keep_freed_memory ms | speed-up |", "|---|---|---|---|---|"]
    for model, dataset in CASES:
        ms: dict[str, list[float]] = {way: [] for way in WAYS}
        for _ in range(args.rounds):
            for keep, way in enumerate(WAYS):
                out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--batches",
                                      str(args.batches), "--child", model, dataset, str(keep)],
                                     check=True, capture_output=True, text=True).stdout
                ms[way].append(1000 * json.loads(out.strip().splitlines()[-1])["seconds"])
        a, b = (statistics.median(ms[way]) for way in WAYS)
        lines.append(f"| {model} | {dataset} | {a:.0f} | {b:.0f} | {a / b:.2f}x |")
        print(lines[-1], flush=True)
    lines.append("")
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
