"""Time to a trained model: seconds until the best validation Recall@20 of lmrec AlphaRec, lmrec LightGCN and RecBole
1.2.1 LightGCN, on the same data and split, in one run, under one stopping rule (lmrec's trainer's):

    validation (full ranking, train items masked) every ``--eval-every`` (5) epochs, stop after ``--patience`` (20)
    validations without improvement or at ``--budget`` (500) epochs, the best epoch's state kept.

Seconds to best: from the first epoch to the end of the validation that found the best state (training and
validation), the same clock in both libraries (lmrec's ``TrainLog.seconds_to_best``, recbole_worker.py's). Seconds to
a common score: until validation first reached the lowest best score among the dataset's runs, the quality every
run attains (:func:`seconds_to_reach`). Settings:
AlphaRec with its paper's (MiniLM titles, 384 → 768 → 64 MLP, lr 5e-4, InfoNCE τ 0.15, 256 shared negatives, batch
4096, precision auto); both LightGCNs 64-d, 2 layers, batch 4096, Adam lr ``--lr`` (1e-3), L2 ``--reg`` (1e-4) on the
batch's layer-0 rows, one uniform negative, xavier init. The split is lmrec's (Games: per-user random 4:3:3, seed
2024; the synthetic set: its files), written as RecBole atomic files (recbole_compare.py's machinery). Each run is a
process of its own with ``--threads`` torch threads; the test metrics are of the best state.

Each finished run is kept as ``<out>.runs/<dataset>-<library>-<model>.json`` with the settings it ran under (the
machine's description among them, and a hash of the code that makes that library's runs: :data:`RUN_CODE`, not this
script), and a later call with the same settings reads it back instead of training again:
a long table (Games) can be made over several sittings. A run not yet finished trains in
``<out>.runs/<dataset>-<library>-<model>.partial/`` and checkpoints at every validation (lmrec's trainer every 5
epochs, recbole_worker.py at each validation): cut off, it goes on from its last checkpoint at the next call with the
same settings, its clock going on from the checkpoint's (the seconds of the epochs after it are lost, not counted);
``resumed_at`` in its record says so. The seconds spent writing checkpoints count in a run's clock (s to best,
total s) as any other work of the run. Each run reports its epochs and validations on stderr while it trains
(``--quiet``: not).

Output: ``<out>.md`` (the table), ``<out>.json`` (every run, its validation curve included) and ``<out>.png``
(validation Recall@20 against seconds, a panel per dataset).

Datasets: registered names or folders; ``synth-ml1m`` is MovieLens-1M-sized synthetic data (6,040 users, 3,260
items, 1M pairs asked: 502k training pairs), written to runs/bench-ml1m on first use. Set-up once:
``bash bench/setup_recbole.sh``. Run alone: a run takes hours (AlphaRec on Games: ~20 s per epoch on two cores).

    LMREC_DATA=../shared/data python bench/time_to_best.py [amazon-video-games-2018 synth-ml1m] [--threads 2]
    python bench/time_to_best.py movielens-100k --budget 2 --eval-every 1 --libraries lmrec   # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from common import ROOT, commit, dataset_path, machine
from recbole_compare import (
    RECBOLE_PYTHON,
    RESULTS,
    lmrec_command,
    recbole_command,
    run_child,
    write_atomic_files,
)

from lmrec.data.registry import load_dataset
from lmrec.eval.report import text_table
from lmrec.io import atomic_write, write_json

SHARED_CODE = ("src/lmrec", "bench/recbole_compare.py", "bench/common.py", "bench/bench_cf.py")  # data, split, lmrec
RUN_CODE = {"lmrec": SHARED_CODE, "recbole": (*SHARED_CODE, "bench/recbole_worker.py")}  # what makes a library's runs
RUNS = (("lmrec", "lightgcn"), ("recbole", "LightGCN"), ("lmrec", "alpharec"))  # the longest last
COLUMNS = ["dataset", "model", "library", "precision", "best epoch", "epochs run", "stopped by", "valid recall@20",
           "s to best", "s to common", "total s", "epoch s", "test recall@20", "test ndcg@20", "load"]


def code_hash(library: str, root: Path = ROOT) -> str:
    """sha256 (16 hex digits) of the files that make a library's runs, as they are on disk (:data:`RUN_CODE`:
    lmrec's package, which loads and splits the data for both, and the bench's workers): a kept run is read back
    while they are unchanged, whatever else changed (this script's table and plot, tests, the other library's
    worker)."""
    digest = hashlib.sha256()
    for name in RUN_CODE[library]:
        path = root / name
        files = sorted(f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts) \
            if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def validation_curve(run: dict[str, Any]) -> list[tuple[float, float]]:
    """(seconds, validation Recall@20) at each of the run's validations: the measured training seconds of every
    epoch up to it, plus one full-ranking evaluation per validation so far at the run's measured evaluation seconds
    (``eval_s``, the test evaluation: the same cost). At the best epoch this is within 1% of the measured
    ``seconds_to_best`` (Amazon Games, both libraries)."""
    elapsed = [0.0, *accumulate(run["epoch_s_all"])]
    return [(elapsed[v["epoch"]] + n * run["eval_s"], v["recall@20"])
            for n, v in enumerate(run["valid_log"], start=1)]


def seconds_to_reach(run: dict[str, Any], target: float) -> float | None:
    """Seconds until the run's validation Recall@20 first reached ``target`` (None if it never did), on
    :func:`validation_curve`'s clock."""
    return next((seconds for seconds, score in validation_curve(run) if score >= target), None)


def plot(runs: list[dict[str, Any]], common: dict[str, float], path: Path) -> None:
    """Validation Recall@20 against seconds (:func:`validation_curve`), a panel per dataset and a line per run, its
    best marked; the dashed line is the dataset's common score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(common)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for run in (r for r in runs if r["dataset"] == dataset):
            seconds, scores = zip(*validation_curve(run), strict=True)
            best = scores.index(max(scores))
            line, = ax.plot(seconds, scores, label=f"{run['library']} {run['model']}")
            ax.plot(seconds[best], scores[best], "o", color=line.get_color())
        ax.axhline(common[dataset], color="grey", linestyle="--", linewidth=0.8, label="common score")
        ax.set_xscale("log")
        ax.set(title=Path(dataset).name, xlabel="seconds (training + validation, log scale)",
               ylabel="validation Recall@20")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def partial_folder(kept: Path, settings: dict[str, Any]) -> Path:
    """The run folder of a run not yet kept (``<kept>.partial``): its checkpoint lets a cut run go on where it was;
    one made under other settings is removed first."""
    folder = kept.with_suffix(".partial")
    stamp = folder / "settings.json"
    if folder.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != settings):
        shutil.rmtree(folder)
    if not stamp.exists():
        write_json(stamp, settings)
    return folder.resolve()  # the workers run in a folder of their own


def common_scores(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per dataset, the lowest best validation Recall@20 among its runs: a score every run reached."""
    common: dict[str, float] = {}
    for run in runs:
        common[run["dataset"]] = min(common.get(run["dataset"], 1.0), run["best_valid_recall@20"])
    return common


def stopped_by(run: dict[str, Any]) -> str:
    """"patience" when ``patience`` validations without improvement followed the best one: converged by the rule
    (also when that happened at the budget's last epoch); "budget (unconverged)" when the epoch budget ended the
    run first."""
    after_best = sum(v["epoch"] > run["best_epoch"] for v in run["valid_log"])
    return "patience" if after_best >= run["settings"]["patience"] else "budget (unconverged)"


def row(run: dict[str, Any], common: float | None = None) -> dict[str, Any]:
    epochs = run.get("epoch_s_all") or [run["epoch_s"]]
    reach = None if common is None else seconds_to_reach(run, common)
    return {"dataset": run["dataset"], "model": run["model"], "library": run["library"],
            "precision": run.get("precision", "fp32"), "best epoch": run["best_epoch"],
            "epochs run": run["epochs_run"], "stopped by": stopped_by(run),
            "valid recall@20": f"{run['best_valid_recall@20']:.4f}",
            "s to best": f"{run['seconds_to_best']:.4g}", "s to common": "-" if reach is None else f"{reach:.4g}",
            "total s": f"{run['total_seconds']:.4g}",
            "epoch s": f"{sorted(epochs)[len(epochs) // 2]:.3g}", "test recall@20": f"{run['recall@20']:.4f}",
            "test ndcg@20": f"{run['ndcg@20']:.4f}", "load": f"{run['load_start']:.1f}-{run['load_end']:.1f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", default=["amazon-video-games-2018", "synth-ml1m"])
    parser.add_argument("--budget", type=int, default=500, help="epochs at most")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--patience", type=int, default=20, help="validations without improvement before stopping")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every process")
    parser.add_argument("--lr", type=float, default=1e-3, help="both LightGCNs")
    parser.add_argument("--reg", type=float, default=1e-4, help="both LightGCNs")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--libraries", default="lmrec,recbole")
    parser.add_argument("--recbole-python", type=Path, default=RECBOLE_PYTHON)
    parser.add_argument("--out", type=Path, default=RESULTS / "time_to_best")
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no per-epoch progress from the runs")
    args = parser.parse_args()
    libraries = set(args.libraries.split(","))
    if "recbole" in libraries and not args.recbole_python.exists():
        sys.exit(f"{args.recbole_python} not found: run `bash bench/setup_recbole.sh` first (or --libraries lmrec)")
    recbole = subprocess.run([str(args.recbole_python), "-c", "import recbole; print(recbole.__version__)"],
                             capture_output=True, text=True).stdout.strip() if "recbole" in libraries else "-"
    load_start = os.getloadavg()[0]
    print(f"torch {torch.__version__}, RecBole {recbole}, {args.threads} thread(s); load average {load_start:.2f} "
          f"on {os.cpu_count()} cores", flush=True)
    not_settings = ("recbole_python", "out", "datasets", "libraries", "progress")
    settings = {k: v for k, v in vars(args).items() if k not in not_settings}
    # a kept run is read back only on the same kind of machine, with the same libraries, lmrec and workers
    settings |= {"machine": machine(), "torch": torch.__version__}
    runs, reused = [], []
    with tempfile.TemporaryDirectory(prefix="time-to-best-") as tmp:
        for name in args.datasets:
            path = dataset_path(name)
            data = load_dataset(path)
            label = Path(name).name
            write_atomic_files(data, Path(tmp) / label, label)
            print(f"{name}: {data.n_users} users, {data.n_items} items, train {data.train.nnz}", flush=True)
            for library, model in RUNS:
                if library not in libraries:
                    continue
                kept = args.out.parent / f"{args.out.name}.runs" / f"{label}-{library}-{model}.json"
                run_settings = settings | {"code": code_hash(library)} | (
                    {"recbole": recbole} if library == "recbole" else {})
                run = json.loads(kept.read_text()) if kept.exists() else None
                if run is None or run.get("settings") != run_settings:
                    folder = partial_folder(kept, run_settings)
                    command = (lmrec_command(args, path, model, args.budget, args.eval_every, folder)
                               if library == "lmrec" else
                               recbole_command(args, Path(tmp), label, model, args.budget, args.eval_every, folder))
                    run = run_child(command, args.threads, Path(tmp)) | {
                        "settings": run_settings, "date": datetime.date.today().isoformat(), "commit": commit()}
                    write_json(kept, run)
                    shutil.rmtree(kept.with_suffix(".partial"), ignore_errors=True)
                else:
                    reused.append(f"{label} / {library} {model}: kept from {run['date']} (commit {run.get('commit')})")
                    print(f"{kept}: kept from an earlier call with the same settings", flush=True)
                runs.append({**run, "dataset": name})  # the name asked for, not the worker's folder
                print(text_table([row(runs[-1])], COLUMNS), flush=True)
    common = common_scores(runs)
    rows = [row(run, common[run["dataset"]]) for run in runs]
    report = {"date": datetime.date.today().isoformat(), "machine": machine(), "torch": torch.__version__,
              "recbole": recbole, "settings": {**settings, "datasets": args.datasets, "libraries": args.libraries},
              "code": {library: code_hash(library) for library in sorted(libraries)},
              "load_start": load_start, "load_end": os.getloadavg()[0], "common_scores": common, "runs": runs}
    lines = [f"# Time to the best validation Recall@20 — {report['date']}", "",
             f"Machine: {report['machine']}. torch {report['torch']}, RecBole {recbole}, {args.threads} thread(s) in "
             f"every process. Load average (1 min) at start {load_start:.2f}, at end {report['load_end']:.2f}. "
             "Code that makes the runs (hashes): " + ", ".join(
                 f"{library} {code}" for library, code in report["code"].items()) + f" (commit {commit()}).",
             f"Rule: validation every {args.eval_every} epochs, stop after {args.patience} validations without "
             f"improvement or at {args.budget} epochs, best state kept. LightGCN (both): 64-d, 2 layers, batch 4096, "
             f"Adam lr {args.lr}, L2 {args.reg}. AlphaRec: its paper's settings, precision auto. Seed {args.seed}.",
             "", "```", text_table(rows, COLUMNS), "```", "",
             "s to best: training + validation seconds until the best validation ended; s to common: until "
             "validation Recall@20 first reached the dataset's common score, the lowest best among its runs ("
             + ", ".join(f"{name} {score:.4f}" for name, score in common.items())
             + "; training seconds measured per epoch, plus one measured evaluation per validation); total s: until "
             "training stopped; epoch s: median training seconds of an epoch; stopped by: patience (converged under "
             "the rule) or the epoch budget (unconverged: its best may lie beyond).", "",
             f"![validation Recall@20 against seconds]({args.out.with_suffix('.png').name})", ""]
    resumed = [f"{Path(run['dataset']).name} / {run['library']} {run['model']}: from the checkpoint of epoch "
               f"{run['resumed_at']} ({run['seconds_before_resume']:.0f} s before)"
               for run in runs if run.get("resumed_at")]
    if resumed:
        lines += ["Runs resumed after a cut (their clock goes on from the checkpoint's): " + "; ".join(resumed) + ".",
                  ""]
    if reused:
        lines += ["Runs read back from an earlier call (same settings, machine, libraries, lmrec and worker code): "
                  + "; ".join(reused) + ".", ""]
    if not {"lmrec", "recbole"} <= libraries:
        lines.append(f"Libraries run: {args.libraries} only (no comparison).")
    write_json(args.out.with_suffix(".json"), report)
    plot(runs, common, args.out.with_suffix(".png"))
    atomic_write(args.out.with_suffix(".md"), lambda f: f.write("\n".join(lines) + "\n"))
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
