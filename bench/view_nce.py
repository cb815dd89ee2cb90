"""The two-view InfoNCE of SGL, XSimGCL and RLMRec, three ways, forward and backward, on the shapes a 4,096-row batch
gives on Amazon Industrial (8,317 users, 4,344 items) and Games (50,546 users):

    logsumexp       logsumexp((a·cᵀ)/τ) − (a·p)/τ   (τ divides the whole b × m table; logsumexp's autograd backward)
    cross_entropy   cross_entropy((a/τ)·cᵀ, targets)  (lmrec's view_info_nce until 2026-12-07)
    lmrec           lmrec.models.nn.contrastive.view_info_nce: one b × m table, in place, its own backward

The same value (printed). Median of ``--repeats`` after one warm-up, alternating. Run alone.

    python bench/view_nce.py [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"
#: (what, anchors b, candidates m): RLMRec's users against every user, SGL's against the other view's every user,
#: XSimGCL's / RLMRec's in-batch items
SHAPES = (("Games: users vs every user (RLMRec kd)", 3600, 50546),
          ("Industrial: users vs every user (RLMRec kd, SGL)", 2900, 8317),
          ("in-batch items (XSimGCL, RLMRec)", 2500, 2500))


def logsumexp_form(anchor: torch.Tensor, candidates: torch.Tensor, tau: float, targets: torch.Tensor) -> torch.Tensor:
    a, c = F.normalize(anchor, dim=-1), F.normalize(candidates, dim=-1)
    return (torch.logsumexp(a @ c.T / tau, dim=1) - (a * c[targets]).sum(-1) / tau).mean()


def cross_entropy_form(anchor: torch.Tensor, candidates: torch.Tensor, tau: float, targets: torch.Tensor
                       ) -> torch.Tensor:
    return F.cross_entropy(F.normalize(anchor, dim=-1) / tau @ F.normalize(candidates, dim=-1).T, targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "view_nce.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from common import machine, median_ms, write_lines

    from lmrec.allocator import keep_freed_memory
    from lmrec.models.nn.contrastive import view_info_nce

    kept = keep_freed_memory()  # as training runs (lmrec.cli)

    lines = [f"# Two-view InfoNCE — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); load average (1 min) "
             f"{os.getloadavg()[0]:.2f}; freed memory kept in the process: {kept}. 64-d, τ = 0.2, forward and "
             f"backward, median of {args.repeats}, alternating.", "",
             "| shapes | b × m | logsumexp ms | cross_entropy ms | lmrec ms | lmrec over cross_entropy | same value |",
             "|---|---|---|---|---|---|---|"]
    for what, b, m in SHAPES:
        anchor = torch.randn(b, 64, requires_grad=True)
        candidates = torch.randn(m, 64, requires_grad=True)
        targets = torch.randperm(m)[:b]
        ways: dict[str, Callable[[], torch.Tensor]] = {
            "logsumexp": lambda: logsumexp_form(anchor, candidates, 0.2, targets),  # noqa: B023
            "cross_entropy": lambda: cross_entropy_form(anchor, candidates, 0.2, targets),  # noqa: B023
            "lmrec": lambda: view_info_nce(anchor, candidates, 0.2, targets),  # noqa: B023
        }
        values = {way: float(loss()) for way, loss in ways.items()}

        def backward(loss: Callable[[], torch.Tensor]) -> None:
            anchor.grad = candidates.grad = None  # noqa: B023
            loss().backward()

        ms = median_ms({way: functools.partial(backward, loss) for way, loss in ways.items()}, args.repeats)
        same = all(abs(v - values["lmrec"]) <= 1e-5 * abs(values["lmrec"]) for v in values.values())
        lines.append(f"| {what} | {b} × {m} | {ms['logsumexp']:.0f} | {ms['cross_entropy']:.0f} | {ms['lmrec']:.0f} | "
                     f"{ms['cross_entropy'] / ms['lmrec']:.2f}x | {'yes' if same else 'NO'} ({values['lmrec']:.5f}) |")
        print(lines[-1], flush=True)
    lines.append("")
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
