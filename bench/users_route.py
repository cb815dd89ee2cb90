"""One training step of each LM-input model (AlphaRec, KAR, RLMRec), two ways, on real datasets with their MiniLM
title features:

    dense       the affine layers that read z_users (AlphaRec's and RLMRec's first MLP layer, KAR's seven user-side
                expert input layers and gate) over z_users = P z_items, computed once
    via items   those layers on the items only, the users' rows as P (W z_items + b)
                (the same numbers; tests/models/test_cf_models.py checks values and gradients)

The models take "via items" where lmrec.models.nn.lm_inputs.users_via_items expects it to be faster; the table shows
their pick. A step = the model's loss on one training batch (its own sampler, ``--batch`` rows), forward and
backward. Median of ``--repeats`` steps after one warm-up, the two ways alternating. Run alone (other processes on
the cores distort the figures).

    LMREC_DATA=../shared/data python bench/users_route.py [--datasets ...] [--models ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ("movielens-100k", "amazon-industrial-scientific-2018", "movielens-latest-small")
#: the Games table's settings for the models on XSimGCL (configs/alpharec/01-games-contenders.toml)
MODELS = {"alpharec": {}, "kar": {"cl_tau": 0.2, "cl_weight": 0.01}, "rlmrec": {"cl_tau": 0.2, "cl_weight": 0.01}}
WAYS = {"dense": False, "via items": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS / "users_route.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from common import commit, machine, write_lines

    from lmrec.allocator import keep_freed_memory
    from lmrec.data.registry import load_dataset
    from lmrec.models.base import MODELS as REGISTRY
    from lmrec.train.determinism import deterministic_kernels

    kept = keep_freed_memory()  # as training runs (lmrec.cli)
    lines = [f"# The users' input layers, dense or through the items — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); lmrec {commit()}; load "
             f"average (1 min) {os.getloadavg()[0]:.2f}; freed memory kept in the process: {kept}; the trainer's "
             f"deterministic CPU kernels. A step: the model's loss on one training batch ({args.batch} rows), "
             f"forward and backward; median of {args.repeats}, alternating.", "",
             "| dataset | users | items | train edges | model | dense ms | via items ms | speed-up | the model takes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in args.datasets:
        data = load_dataset(name)
        for model_name in args.models:
            model = REGISTRY.get(model_name, "cf")(**MODELS[model_name])
            model.prepare(data, seed=0)
            pick = "via items" if model.users_via_items else "dense"
            with deterministic_kernels(torch.device("cpu")):
                ms = _median_ms(model, args.batch, args.repeats)
            lines.append(f"| {name} | {data.n_users} | {data.n_items} | {data.train.nnz} | {model_name} | "
                         f"{ms['dense']:.0f} | {ms['via items']:.0f} | {ms['dense'] / ms['via items']:.2f}x | {pick} |")
            print(lines[-1], flush=True)
    lines.append("")
    write_lines(args.out, lines)


def _median_ms(model: Any, batch_size: int, repeats: int) -> dict[str, float]:
    """Median ms of a training step (the loss on one batch, forward and backward) for each way."""
    from common import median_ms

    batch = next(iter(model.batches(np.random.default_rng(0), batch_size)))
    model.set_training(True)

    def step(via_items: bool) -> None:
        model.users_via_items = via_items
        model.net.zero_grad()
        model.loss(batch).backward()

    return median_ms({way: functools.partial(step, via_items) for way, via_items in WAYS.items()}, repeats)


if __name__ == "__main__":
    main()
