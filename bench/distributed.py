"""Does data-parallel training pay off here? Seconds per training epoch of real `lmrec train` runs in one process
(all threads) against N processes (`--nproc N`, the threads divided), same data, seed and global batch, so the
runs are the same optimisation (tests/train/test_distributed.py). Epoch seconds come from each run's log.jsonl
(training only; validation excluded). Run alone.

    python bench/distributed.py --dataset runs/bench-scaling/synth-1000000-seed1 [--models lightgcn,alpharec]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parents[1] / "runs" / "bench-distributed"


def epoch_seconds(model: str, dataset: str, epochs: int, nproc: int, threads: int) -> list[float]:
    out = WORK / f"{model}-nproc{nproc}-threads{threads}"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "lmrec", "train", model, "--dataset", dataset, "--out", str(out),
               "--epochs", str(epochs), "--eval-every", str(epochs), "--no-progress", "--threads", str(threads)]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    return [json.loads(line)["seconds"] for line in (out / "log.jsonl").read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--models", default="lightgcn,alpharec")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "distributed")
    args = parser.parse_args()

    from common import machine

    from lmrec.eval.report import text_table
    from lmrec.io import atomic_write, write_json

    cores = os.cpu_count() or 1
    load_start = os.getloadavg()[0]
    rows = []
    for model in args.models.split(","):
        for nproc, threads in ((1, cores), (args.nproc, max(1, cores // args.nproc))):
            seconds = epoch_seconds(model, args.dataset, args.epochs, nproc, threads)
            rows.append({"model": model, "processes": nproc, "threads each": threads,
                         "epoch s (median)": f"{statistics.median(seconds):.2f}",
                         "epochs": " ".join(f"{s:.2f}" for s in seconds)})
            print(text_table(rows[-1:], list(rows[-1])), flush=True)
    date = datetime.date.today().isoformat()
    text = "\n".join([
        f"# Data-parallel training on one machine — {date}", "",
        f"Machine: {machine()}. Load average (1 min) at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}.",
        f"Data: {args.dataset}; model defaults; {args.epochs} epochs per run; gloo on loopback.", "",
        "```", text_table(rows, list(rows[0])), "```", ""])
    write_json(args.out.with_suffix(".json"), {"date": date, "machine": machine(), "dataset": args.dataset,
                                               "rows": rows})
    atomic_write(args.out.with_suffix(".md"), lambda f: f.write(text))
    print("\n" + text)


if __name__ == "__main__":
    main()
