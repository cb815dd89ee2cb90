"""AlphaRec's per-row negatives (the paper's sampler: 256 items drawn for each row), their scores two ways:

    gather      torch.gather(u @ Eᵀ, 1, index): a batch × n_items score table, zero-filled and read again in the
                backward (lmrec until 2026-12-07)
    row_scores  lmrec.models.nn.losses.row_scores: each row against its own items, through a sparse matrix with
                the rows' items as entries (sampled_addmm forward, a CSR product and chunked index_add_ backward)

First the scores alone, forward and backward, at a 4,096-row batch for each dataset's item count; then one AlphaRec
training step (``negatives = "per_row"``, τ 0.2, the Games table's settings) both ways. The trainer's deterministic
CPU kernels, freed memory kept in the process (as training runs). Median of ``--repeats`` after one warm-up,
alternating. Run alone.

    LMREC_DATA=../shared/data python bench/row_scores.py [--datasets ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import commit, machine, median_ms, write_lines

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("amazon-video-games-2018", "amazon-industrial-scientific-2018", "movielens-100k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "row_scores.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import lmrec.models.cf.alpharec as alpharec
    import lmrec.models.nn.losses as losses
    from lmrec.allocator import keep_freed_memory
    from lmrec.data.registry import load_dataset
    from lmrec.train.determinism import deterministic_kernels

    kept = keep_freed_memory()
    datasets = {name: load_dataset(name) for name in args.datasets}
    lines = [f"# Per-row negative scores — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); lmrec {commit()}; load "
             f"average (1 min) {os.getloadavg()[0]:.2f}; freed memory kept in the process: {kept}. Median of "
             f"{args.repeats}, alternating, forward and backward.", "",
             "## The scores alone (4,096 rows × 256 items, 64-d)", "",
             "| items | gather ms | row_scores ms | speed-up | same values and gradients |", "|---|---|---|---|---|"]
    with deterministic_kernels(torch.device("cpu")):
        for data in datasets.values():
            ms, same = _scores_alone(losses, data.n_items, args.repeats)
            lines.append(f"| {data.n_items} | {ms['gather']:.0f} | {ms['row_scores']:.0f} | "
                         f"{ms['gather'] / ms['row_scores']:.2f}x | {'yes' if same else 'NO'} |")
            print(lines[-1], flush=True)
        lines += ["", "## One AlphaRec training step (per-row negatives, batch 4,096)", "",
                  "| dataset | users | items | gather ms | row_scores ms | speed-up |", "|---|---|---|---|---|---|"]
        for name, data in datasets.items():
            ms = _alpharec_step(alpharec, data, args.repeats)
            lines.append(f"| {name} | {data.n_users} | {data.n_items} | {ms['gather']:.0f} | {ms['row_scores']:.0f} | "
                         f"{ms['gather'] / ms['row_scores']:.2f}x |")
            print(lines[-1], flush=True)
    lines.append("")
    write_lines(args.out, lines)


def _gathered(users: torch.Tensor, items: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(users @ items.T, 1, index)


def _scores_alone(losses, n_items: int, repeats: int) -> tuple[dict[str, float], bool]:
    """Median ms of the scores' forward and backward each way; whether the two give the same values and
    gradients."""
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(4096, 64, generator=gen, requires_grad=True)
    items = torch.randn(n_items, 64, generator=gen, requires_grad=True)
    index = torch.randint(0, n_items, (4096, 256), generator=gen)
    weights = torch.randn(4096, 256, generator=gen)

    def run(scores: Callable) -> tuple[torch.Tensor, ...]:
        users.grad = items.grad = None
        s = scores(users, items, index)
        (s * weights).sum().backward()
        return s.detach(), users.grad, items.grad

    same = all(torch.allclose(a, b, rtol=1e-4, atol=1e-4)
               for a, b in zip(run(_gathered), run(losses.row_scores), strict=True))
    return median_ms({"gather": lambda: run(_gathered), "row_scores": lambda: run(losses.row_scores)}, repeats), same


def _alpharec_step(alpharec, data, repeats: int) -> dict[str, float]:
    """Median ms of an AlphaRec training step (per-row negatives), its negatives scored each way."""
    model = alpharec.AlphaRec(tau=0.2, negatives="per_row")
    model.prepare(data, seed=0)
    model.set_training(True)
    batch = next(iter(model.batches(np.random.default_rng(0), 4096)))

    def step(scores: Callable) -> None:
        alpharec.row_scores = scores
        model.net.zero_grad()
        model.loss(batch).backward()

    original = alpharec.row_scores
    try:
        return median_ms({"gather": lambda: step(_gathered), "row_scores": lambda: step(original)}, repeats)
    finally:
        alpharec.row_scores = original


if __name__ == "__main__":
    main()
