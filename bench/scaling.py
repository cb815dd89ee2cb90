"""How LightGCN and AlphaRec (MiniLM titles) scale with the data, on `lmrec data synth` sets of growing size:
seconds per training batch and per epoch, seconds per full-ranking evaluation, and peak resident memory, with
the growth exponent b of y ≈ a·n^b fitted by least squares on log-log (n = training interactions).

Every (size, model) runs in a worker process of its own, so its peak memory (``ru_maxrss``) is its own. An epoch
of these full-graph models recomputes every node's representation for every batch, so its cost grows like
(interactions / batch) × (graph size): at 10M interactions it is hours for AlphaRec. The epoch column is therefore
the median of ``--batches`` timed batches (after one warm-up batch) times the batches in an epoch, and says so.
The evaluation is one full ranking of every test user, representations included. Text encoding is done once per
size (through the embedding cache) and is not timed. Run alone: other processes distort every figure.

    python bench/scaling.py [--sizes 1000000,3000000,10000000] [--batches 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parents[1] / "runs" / "bench-scaling"
MODELS = ("lightgcn", "alpharec")
SERIES = (("epoch s", "epoch"), ("eval s", "eval"), ("peak MB", "memory"))


def synth_folder(size: int, seed: int) -> Path:
    """The `lmrec data synth` folder of ``size`` asked-for interactions (made once under runs/bench-scaling)."""
    folder = WORK / f"synth-{size}-seed{seed}"
    if not (folder / "train.txt").exists():
        subprocess.run([sys.executable, "-m", "lmrec", "data", "synth", "--interactions", str(size), "--seed",
                        str(seed), "--out", str(folder)], check=True)
    return folder


def worker(model_name: str, folder: Path, batches: int, threads: int) -> dict[str, Any]:
    """Time ``batches`` training batches and one full-ranking evaluation of one model on one folder."""
    import torch
    from bench_cf import peak_rss_mb, train_stream
    from common import user_scores

    from lmrec.data.registry import DataRef
    from lmrec.eval.ranking import evaluate
    from lmrec.models.base import get_model
    from lmrec.text import CachedEncoder, get_encoder

    torch.set_num_threads(threads)
    baseline = peak_rss_mb()
    data = DataRef.of(str(folder)).load()
    settings: dict[str, Any] = {}
    if model_name == "alpharec":
        encoder = CachedEncoder(get_encoder("minilm"))
        settings["features"] = encoder.encode(data.catalog.text(("title",)), progress=False)
    model = get_model(model_name, "cf")(**settings)
    config, optimizer, stream = train_stream(model, data)
    times = []
    for i in range(batches + 1):
        start = time.perf_counter()
        batch = next(stream)
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
        if i:  # the first batch warms up allocations and caches
            times.append(time.perf_counter() - start)
    model.set_training(False)
    per_epoch = max(1, round(data.train.nnz / config.batch_size))
    start = time.perf_counter()
    result = evaluate(user_scores(model), data, "test", batch_size=1024)
    eval_seconds = time.perf_counter() - start
    return {"model": model_name, "users": data.n_users, "items": data.n_items, "train nnz": int(data.train.nnz),
            "batch s": statistics.median(times), "batches / epoch": per_epoch,
            "epoch s": statistics.median(times) * per_epoch, "eval s": eval_seconds,
            "eval users": result.protocol["users"], "peak MB": peak_rss_mb(), "import MB": baseline,
            "load": os.getloadavg()[0]}


def fit_power_law(n: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of y ≈ a·n^b, least squares on log-log."""
    b, log_a = np.polyfit(np.log(n), np.log(y), 1)
    return float(np.exp(log_a)), float(b)


def plot(rows: list[dict[str, Any]], fits: dict[str, tuple[float, float]], title: str) -> bytes:
    """Log-log plots (time left, memory right) with the fitted lines; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for model in MODELS:
        for key, label in SERIES:
            pts = [(r["train nnz"], r[key]) for r in rows if r["model"] == model]
            if len(pts) < 2:
                continue
            n, y = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
            a, b = fits[f"{model} {label}"]
            ax = axes[1 if label == "memory" else 0]
            line = ax.plot(n, y, "o", label=f"{model} {label}: b = {b:.2f}")[0]
            grid = np.geomspace(n.min(), n.max(), 50)
            ax.plot(grid, a * grid**b, "-", color=line.get_color(), alpha=0.6)
    for ax, ylabel in zip(axes, ("seconds", "peak resident MB"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training interactions n")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, 140), fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,3000000,10000000", help="interactions asked of lmrec data synth")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", type=int, default=5, help="timed training batches per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args.batches, args.threads)))
        return

    from common import machine

    from lmrec.eval.report import text_table
    from lmrec.io import atomic_write, write_bytes, write_json

    load_start = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for size in (int(float(s)) for s in args.sizes.split(",")):
        folder = synth_folder(size, args.seed)
        for model in args.models.split(","):
            done = subprocess.run([sys.executable, __file__, "--worker", model, str(folder), "--batches",
                                   str(args.batches), "--threads", str(args.threads)], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{model} on {folder} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(text_table([_shown(rows[-1])], list(_shown(rows[-1]))), flush=True)
    fits = {}
    for model in args.models.split(","):
        n = np.array([r["train nnz"] for r in rows if r["model"] == model], dtype=float)
        for key, label in SERIES:
            if len(n) > 1:
                fits[f"{model} {label}"] = fit_power_law(n, np.array([r[key] for r in rows if r["model"] == model]))
    load_end = os.getloadavg()[0]
    date = datetime.date.today().isoformat()
    settings = (f"lmrec data synth --interactions {args.sizes} --seed {args.seed} (users n/50, items n/200, "
                f"power-law degrees), default split files, model defaults (batch 4096), {args.threads} thread(s), "
                f"epoch = median of {args.batches} batches × batches per epoch")
    fit_rows = [{"series": name, "a": f"{a:.3g}", "b (y ≈ a·n^b)": f"{b:.2f}"} for name, (a, b) in fits.items()]
    text = "\n".join([
        f"# Scaling on synthetic data — {date}", "",
        f"Machine: {machine()}. Load average (1 min) at start {load_start:.2f}, at end {load_end:.2f}.",
        f"Settings: {settings}.", "",
        "```", text_table([_shown(r) for r in rows], list(_shown(rows[0]))), "",
        text_table(fit_rows, list(fit_rows[0])) if fit_rows else "", "```", "",
        "![scaling](scaling.png)",
    ])
    write_bytes(args.out.with_suffix(".png"), plot(rows, fits, f"{date}, {settings}"))
    write_json(args.out.with_suffix(".json"), {"date": date, "machine": machine(), "settings": {
        k: v for k, v in vars(args).items() if k != "worker"} | {"out": str(args.out)}, "load_start": load_start,
        "load_end": load_end, "rows": rows, "fits": {k: {"a": a, "b": b} for k, (a, b) in fits.items()}})
    atomic_write(args.out.with_suffix(".md"), lambda f: f.write(text + "\n"))
    print("\n" + text)


def _shown(row: dict[str, Any]) -> dict[str, str]:
    return {k: (f"{v:.3g}" if isinstance(v, float) else str(v)) for k, v in row.items()}


if __name__ == "__main__":
    main()
