"""Speed and memory of the CF layer: seconds per training epoch (LightGCN, AlphaRec) and full-ranking
users per second, with the process's peak resident memory. Freed memory is kept in the process as the lmrec command
keeps it. Run alone: other processes on the same cores distort every figure.

    python bench/bench_cf.py [--datasets movielens-100k,movielens-latest-small] [--epochs 3] [--threads 2]
    python bench/bench_cf.py --datasets amazon-video-games-2018,synth-ml1m --out bench/results/bench_cf_games_ml1m.md
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import resource
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.data.registry import load_dataset
from lmrec.eval.ranking import evaluate
from lmrec.eval.report import text_table as format_table
from lmrec.models.base import get_model
from lmrec.text import encode_catalog, get_encoder


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_stream(model, data, seed: int = 2024) -> tuple[Any, torch.optim.Optimizer, Iterator[Any]]:
    """Prepare ``model`` on ``data`` (initialised from ``seed``) in training mode; return its training config, an
    Adam over its trainable parameters at the config's lr, and an endless stream of its training batches (drawn
    with numpy seed 0)."""
    model.prepare(data, seed=seed)
    config = model.train_config({"progress": False})
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    model.set_training(True)
    rng = np.random.default_rng(0)
    stream = itertools.chain.from_iterable(model.batches(rng, config.batch_size) for _ in itertools.count())
    return config, optimizer, stream


def bench_model(name: str, data, epochs: int, features: np.ndarray | None, **settings) -> dict:
    model = get_model(name)(**settings) if features is None else get_model(name)(features=features, **settings)
    config = model.train_config({"progress": False})
    model.precision = getattr(config, "precision", "fp32")  # "auto" resolved here (lmrec before 2026-12-06: fp32)
    model.prepare(data)
    optimizer = torch.optim.Adam(list(model.parameters()), lr=config.lr)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(epochs):
        model.set_training(True)
        start = time.perf_counter()
        for batch in model.batches(rng, config.batch_size):
            optimizer.zero_grad()
            model.loss(batch).backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    model.set_training(False)
    from common import user_scores

    evaluate(user_scores(model), data, "test")  # warm-up: builds the inference embeddings once, as a server would
    start = time.perf_counter()
    result = evaluate(user_scores(model), data, "test")
    seconds = time.perf_counter() - start
    return {"precision": model.precision, "epoch s (median)": statistics.median(times), "eval s": seconds,
            "users/s": result.protocol["users"] / seconds, "peak MB": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="movielens-100k,movielens-latest-small")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table there (markdown)")
    args = parser.parse_args()
    from common import dataset_path, machine, write_lines

    from lmrec.allocator import keep_freed_memory

    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for dataset in args.datasets.split(","):
        data = load_dataset(dataset_path(dataset))
        features = encode_catalog(data.catalog.text(("title",)), get_encoder("minilm"), progress=False)
        for name, feats, settings in (("lightgcn", None, {}), ("alpharec", features, {}),
                                      ("alpharec", features, {"negatives": "per_row"})):
            label = name + ("" if not settings else f" ({', '.join(f'{k}={v}' for k, v in settings.items())})")
            row = bench_model(name, data, args.epochs, feats, **settings)
            rows.append({"dataset": dataset, "model": label, "train nnz": data.train.nnz,
                         **{k: v if isinstance(v, str) else f"{v:.3g}" for k, v in row.items()}})
            print(format_table(rows[-1:], list(rows[-1])), flush=True)
    print("\n" + format_table(rows, list(rows[0])))
    if args.out is not None:
        write_lines(args.out, [f"# CF speed — {datetime.date.today()}", "",
                               f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
                               f"{args.epochs} epochs (median); load average (1 min) {load_start:.2f} at start, "
                               f"{os.getloadavg()[0]:.2f} at end.", "", "```", format_table(rows, list(rows[0])),
                               "```", ""])


if __name__ == "__main__":
    main()
