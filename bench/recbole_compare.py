"""lmrec against RecBole 1.2.1 on the same data, split and settings, measured back to back in one run.

Both libraries train LightGCN (2 layers) and MF with BPR (RecBole's ``BPR``, lmrec's ``mf``): 64-d, batch
4096, Adam lr 1e-3, L2 1e-4 on the batch's layer-0 embeddings, one uniform negative per positive, the same
number of epochs, then rank the full catalog (train items masked at validation, train + valid at test)
and report Recall/NDCG@20. The split is lmrec's default for the dataset (per-user random 4:3:3, seed
2024), written out as RecBole "benchmark_filename" atomic files, so both train and evaluate on the very
same interactions. Each (library, model) runs in its own process, so peak memory is that process's
ru_maxrss; the pair runs back to back and its ratios lmrec/RecBole are printed under it.

A second table gives the seconds to the best validation Recall@20 (training + validation, evaluated every
``--eval-every`` epochs within ``--budget`` epochs, ``--patience`` validations without improvement stop
it) of RecBole LightGCN, lmrec LightGCN and lmrec AlphaRec (MiniLM titles, its paper settings: lr 5e-4,
InfoNCE, 256 shared negatives; text encoding, cached, is not counted).

Set-up once: ``bash bench/setup_recbole.sh`` (creates .venv-recbole). Run alone: other processes on the
same cores distort every figure; the load average at start and end is recorded.

    python bench/recbole_compare.py movielens-100k movielens-latest-small [--epochs 20] [--threads 1]
    python bench/recbole_compare.py synth-ml1m amazon-video-games-2018 --epochs 5 --budget 0   # ML-1M-sized, Games
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_cf import peak_rss_mb
from common import dataset_path, machine, user_scores

from lmrec.allocator import keep_freed_memory
from lmrec.data.interactions import SplitData
from lmrec.data.registry import load_dataset
from lmrec.eval.ranking import evaluate
from lmrec.eval.report import text_table as format_table
from lmrec.io import atomic_write, write_json
from lmrec.models.base import get_model
from lmrec.text import encode_catalog, get_encoder

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
RECBOLE_PYTHON = ROOT / ".venv-recbole" / "bin" / "python"
PAIRS = (("lightgcn", "LightGCN"), ("mf", "BPR"))  # (lmrec name, RecBole name)
TIME_KEYS = {"epoch s": "epoch_s", "epoch cpu s": "epoch_cpu_s", "eval s": "eval_s", "eval cpu s": "eval_cpu_s"}
RATIO_KEYS = TIME_KEYS | {"peak MB": "peak_mb", "recall@20": "recall@20", "ndcg@20": "ndcg@20"}
COLUMNS = ["dataset", "model", "library", *RATIO_KEYS, "load"]
BEST_COLUMNS = ["dataset", "model", "library", "best epoch", "valid recall@20", "s to best", "total s",
                "test recall@20", "test ndcg@20", "load"]

NOTES = """\
Notes:
- Metrics: RecBole's Recall@K is hits/|T| (denominator not capped at K) and its NDCG@K binary with IDCG over
  min(|T|, K) positions, the same definitions as lmrec's (lmrec.eval.metrics); both average over test users.
- Ties: RecBole ranks with torch.topk (order among equal scores implementation-defined); lmrec breaks ties by
  a seeded random item priority. With continuous scores ties are rare; they cannot explain metric gaps.
- Sampling: RecBole visits every training interaction once per epoch (ceil(n/4096) batches); lmrec draws
  users uniformly, then one of their items (LightGCN's sampler; round(n/4096) batches). Both draw one negative
  uniformly among the user's non-training items.
- Initialisation: RecBole LightGCN xavier-uniform, BPR xavier-normal; lmrec xavier-normal for both (its default).
- L2: RecBole LightGCN with require_pow=True computes reg*sum||e0||^2/(2b) like lmrec; RecBole's BPR has no L2
  term at all (lmrec mf keeps reg 1e-4; on these sizes its cost is negligible).
- Evaluation: RecBole's eval_batch_size counts (user, item) pairs; it is set to 1024 users x items, lmrec
  ranks 1024 users per batch. Each evaluation time is the median of 3 test evaluations, each recomputing
  the propagated embeddings; RecBole's padding item 0 is scored and masked.
- "s" columns are wall seconds, "cpu s" the process's CPU seconds (time.process_time), which a loaded
  machine distorts less; every process runs the same number of torch threads.
- Peak MB is ru_maxrss of the process that ran the model (imports, data, training and evaluation included).
- Time to best: seconds from the first epoch to the end of the best validation (training + validation
  time, in-memory best-state copy included), the same clock in both libraries.
"""


# -- data ---------------------------------------------------------------------------------------------
def write_atomic_files(data: SplitData, folder: Path, name: str) -> None:
    """``name.{train,valid,test}.inter`` (one ``user\\titem`` row per pair, dense lmrec indices as tokens) and
    ``name.item`` (every catalog item, so that RecBole ranks the same catalog as lmrec)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        pairs = data.split(split).tocoo()
        rows = "".join(f"{u}\t{i}\n" for u, i in zip(pairs.row.tolist(), pairs.col.tolist(), strict=True))
        (folder / f"{name}.{split}.inter").write_text("user_id:token\titem_id:token\n" + rows, encoding="utf-8")
    items = "".join(f"{i}\n" for i in range(data.n_items))
    (folder / f"{name}.item").write_text("item_id:token\n" + items, encoding="utf-8")


# -- lmrec side (runs in a child process: --worker MODEL) ---------------------------------------------
def time_batches(model: Any, cpu_seconds: list[float]) -> None:
    """Record the process CPU seconds of each epoch: from the Trainer's first batch request to the last batch's
    step (the Trainer itself logs each epoch's wall seconds)."""
    inner = model.batches

    def batches(rng: np.random.Generator, batch_size: int) -> Iterator[Any]:
        start = time.process_time()
        yield from inner(rng, batch_size)
        cpu_seconds.append(time.process_time() - start)

    model.batches = batches


def lmrec_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train one lmrec model with its Trainer and time epochs and full-ranking test evaluations."""
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the lmrec command does
    data = load_dataset(args.datasets[0])
    name = args.worker
    if name == "alpharec":
        features = encode_catalog(data.catalog.text(("title",)), get_encoder("minilm"), progress=False)
        model = get_model(name)(features=features)
        train = {}  # AlphaRec's paper settings (lr 5e-4, batch 4096)
    else:
        model = get_model(name)(emb_dim=64, reg=args.reg)  # the init seed is the training seed
        train = {"lr": args.lr, "batch_size": 4096}
    epochs = args.epochs
    train |= {"epochs": epochs, "eval_every": args.eval_every or epochs, "patience": args.patience,
              "seed": args.seed, "progress": args.progress}
    epoch_cpu: list[float] = []
    time_batches(model, epoch_cpu)
    if args.folder is not None:  # the per-epoch log and a checkpoint every 5 epochs; resumed from when there
        args.folder.mkdir(parents=True, exist_ok=True)
    log = model.fit(data, train, folder=args.folder, resume=args.folder is not None)
    eval_seconds, eval_cpu = [], []
    for _ in range(args.eval_repeats):
        model.set_training(False)  # drops the cached propagated embeddings
        t0, c0 = time.perf_counter(), time.process_time()
        result = evaluate(user_scores(model), data, "test", ks=(20,), metrics=("recall", "ndcg"), seed=args.seed)
        eval_seconds.append(time.perf_counter() - t0)
        eval_cpu.append(time.process_time() - c0)
    test = {name: est.mean for name, est in result.summary().items()}
    epoch_seconds = [r.seconds for r in log.records]
    return {
        "library": "lmrec", "model": name, "dataset": args.datasets[0],
        "users": data.n_users, "items": data.n_items, "train_interactions": int(data.train.nnz),
        "test_users": int(result.protocol["users"]),
        "epochs_run": len(log.records),
        "epoch_s": float(np.median(epoch_seconds)), "epoch_s_all": epoch_seconds,
        "epoch_cpu_s": float(np.median(epoch_cpu)),
        "eval_s": float(np.median(eval_seconds)), "eval_s_all": eval_seconds, "eval_cpu_s": float(np.median(eval_cpu)),
        "peak_mb": peak_rss_mb(),
        "recall@20": test["recall@20"], "ndcg@20": test["ndcg@20"],
        "best_epoch": log.best_epoch, "best_valid_recall@20": log.best_score,
        "seconds_to_best": log.seconds_to_best, "total_seconds": log.total_seconds,
        "resumed_at": log.resumed_at, "seconds_before_resume": log.seconds_before_resume,
        "valid_log": [{"epoch": r.epoch, **r.valid} for r in log.records if r.valid],
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "precision": getattr(model, "precision", "fp32"),  # lmrec before 2026-12-06 had fp32 only
        "load_start": load_start, "load_end": os.getloadavg()[0],
    }


# -- orchestration ------------------------------------------------------------------------------------
def run_child(command: list[str], threads: int, cwd: Path) -> dict[str, Any]:
    """Run a worker process (same thread count for both libraries) and parse its last stdout line; its stderr
    (progress, warnings, a traceback) passes through to ours."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}); its messages are above")
    return json.loads(lines[-1])


def lmrec_command(args: argparse.Namespace, dataset: str, model: str, epochs: int, eval_every: int,
                  folder: Path | None = None) -> list[str]:
    """The worker's command line; with ``folder`` it trains there, resuming from the checkpoint it finds."""
    return [sys.executable, str(Path(__file__).resolve()), dataset, "--worker", model, "--epochs", str(epochs),
            "--eval-every", str(eval_every), "--patience", str(args.patience), "--threads", str(args.threads),
            "--lr", str(args.lr), "--reg", str(args.reg), "--seed", str(args.seed)] + progress_flag(args) + (
            [] if folder is None else ["--folder", str(folder)])


def recbole_command(args: argparse.Namespace, data_path: Path, dataset: str, model: str, epochs: int,
                    eval_every: int, folder: Path | None = None) -> list[str]:
    """recbole_worker.py's command line; with ``folder`` it checkpoints there, resuming from the checkpoint it
    finds."""
    return [str(args.recbole_python), str(BENCH / "recbole_worker.py"), "--data-path", str(data_path),
            "--dataset", dataset, "--model", model, "--epochs", str(epochs), "--eval-every", str(eval_every),
            "--patience", str(args.patience), "--threads", str(args.threads), "--lr", str(args.lr),
            "--reg", str(args.reg), "--seed", str(args.seed)] + progress_flag(args) + (
            [] if folder is None else ["--folder", str(folder)])


def progress_flag(args: argparse.Namespace) -> list[str]:
    """``--progress`` for a worker when the call asked for it: each validation reported on stderr."""
    return ["--progress"] if args.progress else []


def table_row(dataset: str, model: str, run: dict[str, Any]) -> dict[str, Any]:
    row = {"dataset": dataset, "model": model, "library": run["library"]}
    row |= {col: f"{run[key]:.3g}" for col, key in TIME_KEYS.items()}
    return row | {"peak MB": f"{run['peak_mb']:.0f}", "recall@20": f"{run['recall@20']:.4f}",
                  "ndcg@20": f"{run['ndcg@20']:.4f}", "load": f"{run['load_start']:.1f}-{run['load_end']:.1f}"}


def ratio_row(dataset: str, model: str, ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    row = {"dataset": dataset, "model": model, "library": "lmrec/RecBole"}
    return row | {col: f"{ours[key] / theirs[key]:.3g}" for col, key in RATIO_KEYS.items()}


def best_row(dataset: str, model: str, run: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": dataset, "model": model, "library": run["library"], "best epoch": run["best_epoch"],
            "valid recall@20": f"{run['best_valid_recall@20']:.4f}", "s to best": f"{run['seconds_to_best']:.3g}",
            "total s": f"{run['total_seconds']:.3g}", "test recall@20": f"{run['recall@20']:.4f}",
            "test ndcg@20": f"{run['ndcg@20']:.4f}", "load": f"{run['load_start']:.1f}-{run['load_end']:.1f}"}


def compare(args: argparse.Namespace, dataset: str, work: Path) -> dict[str, Any]:
    """All runs of one dataset: the per-epoch pairs, then the time-to-best runs."""
    data = load_dataset(dataset)  # a registered name or a folder
    name = Path(dataset).name  # RecBole's dataset name (its files live in work/name/)
    write_atomic_files(data, work / name, name)
    print(f"{dataset}: {data.n_users} users, {data.n_items} items, train/valid/test "
          f"{data.train.nnz}/{data.valid.nnz}/{data.test.nnz} ({data.protocol}, checksum {data.checksum()})",
          flush=True)
    rows, best_rows, runs = [], [], []
    for ours, theirs in PAIRS:
        label = f"{ours} / {theirs}"
        mine = run_child(lmrec_command(args, dataset, ours, args.epochs, 0), args.threads, work)
        other = run_child(recbole_command(args, work, name, theirs, args.epochs, 0), args.threads, work)
        runs += [mine, other]
        rows += [table_row(dataset, label, other), table_row(dataset, label, mine),
                 ratio_row(dataset, label, mine, other)]
        print(format_table(rows[-3:], COLUMNS), flush=True)
    budget, every = args.budget, args.eval_every
    time_to_best = ((recbole_command(args, work, name, "LightGCN", budget, every), "LightGCN"),
                    (lmrec_command(args, dataset, "lightgcn", budget, every), "lightgcn"),
                    (lmrec_command(args, dataset, "alpharec", budget, every), "alpharec"))
    for command, label in time_to_best if budget > 0 else ():
        run = run_child(command, args.threads, work)
        run["kind"] = "time to best"
        runs.append(run)
        best_rows.append(best_row(dataset, label, run))
        print(format_table(best_rows[-1:], BEST_COLUMNS), flush=True)
    return {"dataset": dataset, "stats": data.stats(), "checksum": data.checksum(), "rows": rows,
            "best_rows": best_rows, "runs": runs}


def render(report: dict[str, Any]) -> str:
    """The markdown/plain-text report: settings, both tables, the notes."""
    rows = [r for d in report["datasets"] for r in d["rows"]]
    best = [r for d in report["datasets"] for r in d["best_rows"]]
    s = report["settings"]
    lines = [
        f"# lmrec vs RecBole {report['recbole']} — {report['date']}",
        "",
        f"Machine: {report['machine']}. torch {report['torch']}, {s['threads']} thread(s) in every process. "
        f"Load average (1 min) at start {report['load_start']:.2f}, at end {report['load_end']:.2f} "
        f"({os.cpu_count()} cores).",
        f"Settings: {s['epochs']} epochs, batch 4096, 64-d, LightGCN 2 layers, Adam lr {s['lr']}, L2 {s['reg']}, "
        f"seed {s['seed']}, full ranking, Recall/NDCG@20 on test (train + valid masked).",
        "",
        "## Per epoch and per full-ranking evaluation",
        "",
        "```",
        format_table(rows, COLUMNS),
        "```",
        "",
    ]
    if best:
        lines += [f"## Time to the best validation Recall@20 (budget {s['budget']} epochs, validation every "
                  f"{s['eval_every']}, patience {s['patience']} validations)", "",
                  "```", format_table(best, BEST_COLUMNS), "```", ""]
    lines.append(NOTES)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", help="registered dataset names or folders")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the per-epoch comparison")
    parser.add_argument("--budget", type=int, default=300, help="epoch budget of the time-to-best runs (0: skip them)")
    parser.add_argument("--eval-every", type=int, default=5, help="validation every N epochs (time to best)")
    parser.add_argument("--patience", type=int, default=10, help="validations without improvement before stopping")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every process")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--reg", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--eval-repeats", type=int, default=3)
    parser.add_argument("--recbole-python", type=Path, default=RECBOLE_PYTHON)
    parser.add_argument("--out", type=Path, default=RESULTS / "recbole_compare")
    parser.add_argument("--progress", action="store_true", help="workers report each epoch and validation on stderr")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one lmrec model, print JSON
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)  # internal: the worker's resumable run folder
    args = parser.parse_args()
    if args.worker:  # given a registered name or an absolute folder: its working folder holds RecBole's copies
        print(json.dumps(lmrec_worker(args)))
        return
    # a folder is passed on to the worker processes, which run elsewhere: made absolute (synth-ml1m: written once);
    # only here, as a worker's working folder has a folder of a registered dataset's name (RecBole's atomic files,
    # without titles), which the worker would take for the dataset
    args.datasets = [dataset_path(d) for d in args.datasets]
    if not args.recbole_python.exists():
        sys.exit(f"{args.recbole_python} not found: run `bash bench/setup_recbole.sh` first")
    recbole_version = subprocess.run([str(args.recbole_python), "-c", "import recbole; print(recbole.__version__)"],
                                     capture_output=True, text=True).stdout.strip()
    load_start = os.getloadavg()[0]
    print(f"torch {torch.__version__}, RecBole {recbole_version}, {args.threads} thread(s); "
          f"load average {load_start:.2f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="recbole-compare-") as tmp:
        results = [compare(args, dataset, Path(tmp)) for dataset in args.datasets]
    report = {
        "date": datetime.date.today().isoformat(), "machine": machine(), "torch": torch.__version__,
        "recbole": recbole_version,
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "recbole_python", "out")}
        | {"threads": args.threads},
        "load_start": load_start, "load_end": os.getloadavg()[0], "datasets": results,
    }
    text = render(report)
    write_json(args.out.with_suffix(".json"), report)
    atomic_write(args.out.with_suffix(".md"), lambda f: f.write(text + "\n"))
    print("\n" + text)


if __name__ == "__main__":
    main()
