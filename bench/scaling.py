"""How LightGCN and AlphaRec (MiniLM titles, cached) scale with the data: seconds per training epoch and per
full-ranking evaluation at several sizes of one dataset (a random share of its users, split as the registry
splits the whole), and the growth exponent b of t ≈ a·n^b fitted by least squares on log t = log a + b log n,
n = training interactions. Timings come from bench_cf.bench_model: the median epoch, and one full-ranking test
evaluation that includes computing the representations once (bench_model clears the cache after its warm-up).
Run alone: other processes distort every figure.

    python bench/scaling.py [--dataset movielens-latest-small] [--fractions 0.125,0.25,0.5,1] [--epochs 3]
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import textwrap
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from bench_cf import bench_model
from recbole_compare import machine

from lmrec.data.interactions import SplitData
from lmrec.data.registry import DEFAULT_SEED, get_spec, load_interactions
from lmrec.data.splits import parse_split
from lmrec.eval.report import text_table as format_table
from lmrec.io import atomic_write, write_bytes, write_json
from lmrec.text import encode_catalog, get_encoder

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("lightgcn", "alpharec")
SERIES = (("epoch s (median)", "epoch"), ("eval s", "eval"))


def subsample(dataset: str, fraction: float, seed: int) -> SplitData:
    """A random ``fraction`` of the users with all their interactions, compacted, split as the registry splits."""
    interactions = load_interactions(dataset)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(interactions.n_users, size=max(1, round(fraction * interactions.n_users)), replace=False)
    keep = np.zeros(interactions.n_users, dtype=bool)
    keep[chosen] = True
    part = interactions.select(keep[interactions.users]).compact()
    return parse_split(get_spec(dataset).split, part, DEFAULT_SEED)


def fit_power_law(n: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(a, b) of t ≈ a·n^b, least squares on log-log."""
    b, log_a = np.polyfit(np.log(n), np.log(t), 1)
    return float(np.exp(log_a)), float(b)


def plot(rows: list[dict[str, Any]], fits: dict[str, tuple[float, float]], title: str) -> bytes:
    """Log-log plot of every (model, series) with its fitted line; PNG bytes."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in MODELS:
        for key, label in SERIES:
            pts = [(r["train nnz"], r[key]) for r in rows if r["model"] == model]
            n, t = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
            a, b = fits[f"{model} {label}"]
            line = ax.plot(n, t, "o", label=f"{model} {label}: b = {b:.2f}")[0]
            grid = np.geomspace(n.min(), n.max(), 50)
            ax.plot(grid, a * grid**b, "-", color=line.get_color(), alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training interactions n")
    ax.set_ylabel("seconds")
    ax.set_title(textwrap.fill(title, 95), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-latest-small")
    parser.add_argument("--fractions", default="0.125,0.25,0.5,1", help="shares of the users, comma-separated")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the user subsample")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average {load_start:.2f}", flush=True)
    encoder = get_encoder("minilm")
    rows: list[dict[str, Any]] = []
    for fraction in (float(f) for f in args.fractions.split(",")):
        data = subsample(args.dataset, fraction, args.seed)
        features = encode_catalog(data.catalog.text(("title",)), encoder, progress=False)
        for model in MODELS:
            timing = bench_model(model, data, args.epochs, features if model == "alpharec" else None)
            rows.append({"model": model, "users %": f"{100 * fraction:g}", "users": data.n_users,
                         "items": data.n_items, "train nnz": int(data.train.nnz),
                         "epoch s (median)": timing["epoch s (median)"], "eval s": timing["eval s"],
                         "load": os.getloadavg()[0]})
            print(format_table(rows[-1:], list(rows[-1])), flush=True)
    fits = {}
    for model in MODELS:
        n = np.array([r["train nnz"] for r in rows if r["model"] == model], dtype=float)
        for key, label in SERIES:
            fits[f"{model} {label}"] = fit_power_law(n, np.array([r[key] for r in rows if r["model"] == model]))
    load_end = os.getloadavg()[0]
    date = datetime.date.today().isoformat()
    settings = (f"{args.dataset}, users subsampled {args.fractions} (seed {args.seed}), "
                f"split {get_spec(args.dataset).split} (seed {DEFAULT_SEED}), {args.epochs} epochs, batch 4096, "
                f"{args.threads} thread(s)")
    fit_rows = [{"series": name, "a": f"{a:.3g}", "b (t ≈ a·n^b)": f"{b:.2f}"} for name, (a, b) in fits.items()]
    table = format_table([{**r, "load": f"{r['load']:.1f}"} for r in rows], list(rows[0]))
    text = "\n".join([
        f"# Scaling — {date}", "",
        f"Machine: {machine()}; torch {torch.__version__}. Load average (1 min) at start {load_start:.2f}, "
        f"at end {load_end:.2f}.", f"Settings: {settings}.", "",
        "```", table, "", format_table(fit_rows, list(fit_rows[0])), "```", "",
        "![scaling](scaling.png)",
    ])
    write_bytes(args.out.with_suffix(".png"), plot(rows, fits, f"{date}, {settings}"))
    write_json(args.out.with_suffix(".json"), {"date": date, "machine": machine(), "settings": vars(args) | {
        "split": get_spec(args.dataset).split}, "load_start": load_start, "load_end": load_end, "rows": rows,
        "fits": {k: {"a": a, "b": b} for k, (a, b) in fits.items()}})
    atomic_write(args.out.with_suffix(".md"), lambda f: f.write(text + "\n"))
    print("\n" + text)


if __name__ == "__main__":
    main()
