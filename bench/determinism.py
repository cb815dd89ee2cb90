"""Torch's default CPU kernels against its deterministic ones (what lmrec's trainer uses on CPU,
lmrec.train.determinism), on real datasets:

1. one training step (the loss on one batch, forward and backward) of each CF model, the two modes alternating:
   median ms, and whether ``--repeats`` backward passes on that batch gave bit-identical gradients;
2. with ``--fits``: AlphaRec (per-row negatives) trained twice for 10 epochs on MovieLens-100k in each mode, the
   validation Recall@20 of each run to the last digit (the default mode through the trainer with its deterministic
   block taken out).

Run alone: the races show only with two or more threads, and other processes distort the times.

    LMREC_DATA=../shared/data python bench/determinism.py [--datasets NAME ...] [--threads 2] [--fits]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
MODELS: dict[str, dict[str, Any]] = {
    "mf": {}, "lightgcn": {}, "sgl": {}, "xsimgcl": {}, "bc_loss": {}, "kar": {}, "rlmrec": {},
    "alpharec (shared)": {"negatives": "shared"}, "alpharec (per-row)": {"negatives": "per_row"},
}
MODES = ("default", "deterministic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["amazon-industrial-scientific-2018"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fits", action="store_true", help="also train AlphaRec twice in each mode (~2 min)")
    parser.add_argument("--out", type=Path, default=RESULTS / "determinism.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from common import commit, machine, write_lines

    from lmrec.data.registry import load_dataset

    lines = [f"# Default against deterministic CPU kernels — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); lmrec {commit()}; load "
             f"average (1 min) {os.getloadavg()[0]:.2f}. A step: the model's loss on one training batch (its own "
             f"sampler, batch 4096), forward and backward; median of {args.repeats}, the modes alternating. "
             "'repeatable': every backward of that batch gave the same gradients to the last bit.", "",
             "| dataset | model | default ms | deterministic ms | ratio | default repeatable | deterministic "
             "repeatable |", "|---|---|---|---|---|---|---|"]
    for name in args.datasets:
        data = load_dataset(name)
        for label, settings in MODELS.items():
            ms, repeatable = _step(label.split(" ")[0], settings, data, args.repeats)
            lines.append(f"| {name} | {label} | {ms['default']:.1f} | {ms['deterministic']:.1f} | "
                         f"{ms['deterministic'] / ms['default']:.2f}x | {_yes(repeatable['default'])} | "
                         f"{_yes(repeatable['deterministic'])} |")
            print(lines[-1], flush=True)
    if args.fits:
        lines += ["", "AlphaRec (per-row negatives, τ 0.2) on MovieLens-100k, 10 epochs, seed 2024, each mode twice:",
                  "", "| mode | validation Recall@20, run 1 | run 2 | identical |", "|---|---|---|---|"]
        for mode in MODES:
            first, second = (_fit_recall(mode) for _ in range(2))
            lines.append(f"| {mode} | {first!r} | {second!r} | {_yes(first == second)} |")
            print(lines[-1], flush=True)
    lines.append("")
    write_lines(args.out, lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _step(model_name: str, settings: dict[str, Any], data: Any, repeats: int) -> tuple[dict, dict]:
    """Median ms of a training step in each mode, and whether each mode's gradients repeated exactly."""
    from lmrec.models.base import MODELS as REGISTRY
    from lmrec.train.determinism import deterministic_kernels

    model = REGISTRY.get(model_name, "cf")(**settings)
    model.prepare(data, seed=0)
    batch = next(iter(model.batches(np.random.default_rng(0), 4096)))
    params = [p for p in model.parameters() if p.requires_grad]

    def step(mode: str) -> tuple[float, list[torch.Tensor]]:
        for p in params:
            p.grad = None
        torch.manual_seed(0)  # the same noise at every call (XSimGCL and the models on it perturb embeddings)
        # the deterministic mode as the trainer sets it (lmrec.train.determinism), the default one as torch's
        kernels = deterministic_kernels(torch.device("cpu")) if mode == "deterministic" else contextlib.nullcontext()
        with kernels:
            start = time.perf_counter()
            model.loss(batch).backward()
            seconds = time.perf_counter() - start
        return seconds, [p.grad.clone() for p in params if p.grad is not None]

    first = {mode: step(mode)[1] for mode in MODES}  # warm-up, and the gradients the repeats are compared with
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    same = dict.fromkeys(MODES, True)
    for _ in range(repeats):
        for mode in MODES:
            seconds, grads = step(mode)
            times[mode].append(seconds)
            same[mode] &= all(torch.equal(a, b) for a, b in zip(first[mode], grads))
    return {mode: 1000 * statistics.median(t) for mode, t in times.items()}, same


def _fit_recall(mode: str) -> float:
    """Validation Recall@20 of AlphaRec after 10 epochs on MovieLens-100k, trained in ``mode``."""
    import lmrec
    import lmrec.train.trainer as trainer

    kernels = trainer.deterministic_kernels
    if mode == "default":
        trainer.deterministic_kernels = lambda device: contextlib.nullcontext()
    try:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "run"
            lmrec.fit("alpharec", "movielens-100k", {"epochs": 10, "eval_every": 10, "precision": "fp32",
                                                     "seed": 2024, "progress": False},
                      out=out, tau=0.2, negatives="per_row")
            return json.loads((out / "log.jsonl").read_text().splitlines()[-1])["valid"]["recall@20"]
    finally:
        trainer.deterministic_kernels = kernels


if __name__ == "__main__":
    main()
