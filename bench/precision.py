"""fp32 against bf16 on this machine: the products mixed precision would run in bf16, and whole AlphaRec training
steps, so that ``precision="auto"`` (lmrec.train.precision) can be checked against the hardware it decides from.

1. The CPU's flags (AMX, AVX512-BF16) and what ``auto`` picks for AlphaRec here, with its reason.
2. Dense products, fp32 against bf16 autocast (inputs cast, as in training), forward (and the weight gradient where
   training needs it): AlphaRec's first MLP layer over Games' 50,546 users (384 → 768) and 16,859 items, the second
   layer (768 → 64), an evaluation batch's scores (1,024 users x 64 against 50,546 items) and the loss's products
   (4,096 x 64 against 256 negatives).
3. One AlphaRec training step (MLP, propagation, InfoNCE, forward and backward) in fp32 and in bf16 on each
   dataset, the same batch, alternating; the step's loss both ways.

Medians of ``--repeats`` after one warm-up. Freed memory is kept as the ``lmrec`` command keeps it. Run alone.

    LMREC_DATA=../shared/data python bench/precision.py [--datasets amazon-video-games-2018,DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import dataset_path, machine, median_ms, write_lines

RESULTS = Path(__file__).resolve().parent / "results"
# (what, m, k, n, with the weight gradient): y = x (m, k) @ w (k, n)
PRODUCTS = (
    ("MLP layer 1, Games users (fwd + dW)", 50546, 384, 768, True),
    ("MLP layer 1, Games items (fwd + dW)", 16859, 384, 768, True),
    ("MLP layer 2, Games users (fwd + dW)", 50546, 768, 64, True),
    ("evaluation scores, 1,024 users x 50,546 items", 1024, 64, 50546, False),
    ("loss, 4,096 rows x 256 negatives", 4096, 64, 256, False),
)


def product(m: int, k: int, n: int, grad: bool, precision: str) -> Callable[[], object]:
    """y = x w (and dW = xᵀ g when ``grad``) at ``precision`` (bf16: autocast, as a bf16 run computes it)."""
    from lmrec.train.precision import autocast

    x, w, g = torch.randn(m, k), torch.randn(k, n, requires_grad=grad), torch.randn(m, n)

    def run() -> object:
        with autocast(precision, "cpu"):
            y = x @ w
        if grad:
            y.backward(g)
            w.grad = None
        return y

    return run


def step(data, repeats: int) -> dict[str, object]:
    """One AlphaRec training step in fp32 and in bf16, each model built in its precision (which decides whether the
    users' first layer goes through the items), the same seed and batch, alternating: median ms, the users' route
    and the loss, per precision."""
    from lmrec.models.cf.alpharec import AlphaRec

    out: dict[str, object] = {}
    runs: dict[str, Callable[[], object]] = {}
    for precision in ("fp32", "bf16"):
        model = AlphaRec()
        model.precision = precision
        model.prepare(data, seed=0)
        batch = next(model.batches(np.random.default_rng(0), 4096))
        out[f"route {precision}"] = "items" if model.users_via_items else "dense"

        def once(model: AlphaRec = model, batch: tuple = batch, precision: str = precision) -> object:
            model.net.zero_grad()
            loss = model.loss(batch)
            loss.backward()
            out[f"loss {precision}"] = loss.item()
            return loss

        runs[precision] = once
    return out | median_ms(runs, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="amazon-video-games-2018", help="comma-separated names or folders "
                        "for the training step ('' to skip it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "precision.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lmrec.allocator import keep_freed_memory
    from lmrec.data.registry import load_dataset
    from lmrec.train.precision import choose, cpu_flags

    keep_freed_memory()
    flags = cpu_flags()
    choice = choose("auto", "cpu", bf16_path=True, model="alpharec")
    lines = [f"# fp32 against bf16 — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); load average (1 min) "
             f"{os.getloadavg()[0]:.2f} at start. CPU flags: "
             f"{', '.join(f for f in ('amx_bf16', 'amx_tile', 'avx512_bf16', 'avx512_fp16') if f in flags) or 'none'}"
             f" of amx_bf16, amx_tile, avx512_bf16, avx512_fp16. precision=auto picks {choice.used} for AlphaRec "
             f"here: {choice.why}. Median of {args.repeats}.", "",
             "## Dense products", "", "| product | m x k x n | fp32 ms | bf16 ms | bf16 / fp32 |",
             "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for what, m, k, n, grad in PRODUCTS:
        ms = median_ms({p: product(m, k, n, grad, p) for p in ("fp32", "bf16")}, args.repeats)
        lines.append(f"| {what} | {m} x {k} x {n} | {ms['fp32']:.1f} | {ms['bf16']:.1f} | "
                     f"{ms['bf16'] / ms['fp32']:.2f} |")
        print(lines[-1], flush=True)
    if args.datasets:
        lines += ["", "## One AlphaRec training step (4,096 rows, 256 shared negatives)", "",
                  "| dataset | users | items | train edges | users' first layer fp32 / bf16 | fp32 ms | bf16 ms | "
                  "bf16 / fp32 | loss fp32 | loss bf16 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name in args.datasets.split(","):
            data = load_dataset(dataset_path(name))
            r = step(data, args.repeats)
            lines.append(f"| {data.name} | {data.n_users} | {data.n_items} | {data.train.nnz} | "
                         f"{r['route fp32']} / {r['route bf16']} | {r['fp32']:.0f} | {r['bf16']:.0f} | "
                         f"{r['bf16'] / r['fp32']:.2f} | {r['loss fp32']:.4f} | {r['loss bf16']:.4f} |")
            print(lines[-1], flush=True)
    lines += ["", f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}.", ""]
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
