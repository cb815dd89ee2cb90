"""A table's runs one at a time on every thread, or two at once on one thread each (`lmrec reproduce --jobs 2`)?

Each (dataset, model) is fitted for ``--epochs`` epochs (validation every 5, no early stop, fp32, the trainer's
deterministic kernels, as a comparison table fits it), each fit in a fresh process, three ways:

    alone, T threads      one fit on ``--threads`` threads (``--jobs 1``)
    alone, 1 thread       one fit on one thread
    two at once, 1 each   two fits of the same model started together, one thread each (``--jobs 2`` on 2 cores)

The figure is the fit's own seconds (the model's set-up, its title vectors and graphs, training and validation;
loading the dataset not counted). The throughput of ``--jobs 2`` against ``--jobs 1`` is 2 × s(alone, T) / s(two at
once), the mean of the pair's seconds standing for s(two at once): above 1 means more runs an hour with two at
once. Every fit has the same seed, so the table also says whether T threads and one thread trained to bit-identical
parameters (a hash of them). Run alone: nothing else on the cores.

    LMREC_DATA=../shared/data python bench/jobs.py [--datasets ...] [--models ...] [--epochs 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: the datasets and the costliest models of the comparison table (configs/alpharec/01-comparison.toml)
DATASETS = ("movielens-100k", "movielens-latest-small", "amazon-industrial-scientific-2018")
MODELS = ("alpharec", "kar", "rlmrec", "bc_loss", "xsimgcl", "sgl", "multvae")


def fit(dataset: str, model: str, epochs: int) -> dict[str, float | str]:
    """One fit of ``model`` on ``dataset`` in this process: its trainer's seconds and a hash of its parameters."""
    import hashlib

    import lmrec
    from lmrec.allocator import keep_freed_memory

    keep_freed_memory()  # as the lmrec command runs
    data = lmrec.load_dataset(dataset)
    train = {"epochs": epochs, "eval_every": 5, "patience": 1000, "precision": "fp32", "progress": False}
    run = lmrec.fit(model, data, train, test=False)
    digest = hashlib.sha256()
    for parameter in run.model.parameters():
        digest.update(parameter.detach().cpu().numpy().tobytes())
    return {"seconds": float(run.manifest["fit"]["seconds"]), "parameters": digest.hexdigest()[:16]}


def in_processes(dataset: str, model: str, epochs: int, threads: int, copies: int) -> list[dict[str, float | str]]:
    """``copies`` fits started together, each in a fresh process on ``threads`` threads; what :func:`fit` says of
    each."""
    # the worker sets torch's threads as `lmrec reproduce --jobs` does; OMP_NUM_THREADS also caps numpy's BLAS, which
    # a --jobs worker inherits from the command's environment instead (training runs in torch)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--worker", dataset, model, str(epochs), str(threads)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{model} on {dataset}: the worker failed ({proc.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=RESULTS / "jobs.md")
    parser.add_argument("--worker", nargs=4, metavar=("DATASET", "MODEL", "EPOCHS", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        dataset, model, epochs, threads = args.worker
        import torch

        torch.set_num_threads(int(threads))
        print(json.dumps(fit(dataset, model, int(epochs))))
        return

    from common import commit, machine, write_lines

    t = args.threads
    lines = [f"# One run on {t} threads, or two at once on one each — {datetime.date.today()}", "",
             f"Machine: {machine()}; lmrec {commit()}; load average (1 min) {os.getloadavg()[0]:.2f} at start. "
             f"{args.epochs} epochs a fit (validation every 5), fp32, each fit in a fresh process; its trainer's "
             f"seconds. Throughput of two at once = 2 × s(alone, {t}) / mean s(two at once).", "",
             f"| dataset | model | alone, {t} threads s | alone, 1 thread s | two at once, 1 each s | "
             f"throughput of two at once | same parameters at {t} and 1 thread |", "|---|---|---|---|---|---|---|"]
    gains = []
    for dataset in args.datasets:
        for model in args.models:
            alone, single = (in_processes(dataset, model, args.epochs, n, 1)[0] for n in (t, 1))
            pair = [f["seconds"] for f in in_processes(dataset, model, args.epochs, 1, 2)]
            gain = 2 * float(alone["seconds"]) / (sum(pair) / 2)
            gains.append(gain)
            same = "yes" if alone["parameters"] == single["parameters"] else "no"
            lines.append(f"| {dataset} | {model} | {alone['seconds']:.1f} | {single['seconds']:.1f} | "
                         f"{pair[0]:.1f}, {pair[1]:.1f} | {gain:.2f}x | {same} |")
            print(lines[-1], flush=True)
    lines += ["", f"Load average (1 min) at the end {os.getloadavg()[0]:.2f}. Throughput of two at once, over the "
              f"rows: median {sorted(gains)[len(gains) // 2]:.2f}x, range {min(gains):.2f}-{max(gains):.2f}x.", ""]
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
