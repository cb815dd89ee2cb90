"""Accuracy of bf16 against fp32 training over seeds: does mixed precision change what AlphaRec learns?

For each dataset and seed, AlphaRec is trained twice with its paper's settings (selection on validation Recall@20,
every 5 epochs, patience 20), ``precision="fp32"`` and ``precision="bf16"``; precision is not a stream setting, so
both draw the same initial state and batches and differ by precision only. The table gives each pair's test
Recall@20 and NDCG@20, best epoch and seconds to the best validation, then per dataset the mean over seeds of the
bf16 − fp32 difference with its standard error and a paired t-test over seeds. Runs are folders under ``--runs``
(a finished run is read back, an interrupted one resumed), so the script can be stopped and started again.

bf16 is slow on some CPUs (an Intel Xeon with AVX512-BF16 and no AMX computes it slower than fp32:
bench/precision.py), so on such a machine this measures accuracy only; the seconds mean something where
``precision=auto`` picks bf16.

    LMREC_DATA=../shared/data python bench/precision_accuracy.py [--datasets movielens-100k] [--seeds 1,2,3]
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="movielens-100k", help="comma-separated names or folders")
    parser.add_argument("--model", default="alpharec", help="a model with a bf16 path: alpharec, linear_map, kar, "
                        "rlmrec")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=None, help="epoch budget (default: the model's paper value)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-precision")
    parser.add_argument("--out", type=Path, default=RESULTS / "precision_accuracy.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from common import machine, write_lines

    import lmrec
    from lmrec.allocator import keep_freed_memory
    from lmrec.eval.stats import estimate, paired_test
    from lmrec.train.precision import choose

    keep_freed_memory()
    seeds = [int(s) for s in args.seeds.split(",")]
    auto = choose("auto", "cpu", bf16_path=True)
    lines = [f"# {args.model}: bf16 against fp32 over seeds — {datetime.date.today()}", "",
             f"Machine: {machine()}; torch {torch.__version__}, {args.threads} thread(s); precision=auto picks "
             f"{auto.used} here ({auto.why}); load average (1 min) {os.getloadavg()[0]:.2f} at start. The model's "
             f"paper settings{f', at most {args.epochs} epochs' if args.epochs else ''}; seeds {args.seeds}.", "",
             "| dataset | seed | precision | test recall@20 | test ndcg@20 | best epoch | "
             "training s to best (validation excluded) |",
             "|---|---|---|---|---|---|---|"]
    summary = ["", "| dataset | bf16 − fp32 recall@20 (mean ± SE over seeds) | paired t p | bf16 − fp32 ndcg@20 | "
               "paired t p |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.datasets.split(","):
        data = lmrec.load_dataset(name)
        scores: dict[str, dict[str, list[float]]] = {p: {"recall@20": [], "ndcg@20": []} for p in ("fp32", "bf16")}
        for seed in seeds:
            for precision in ("fp32", "bf16"):
                train = {"seed": seed, "precision": precision, "progress": False}
                if args.epochs:
                    train["epochs"] = args.epochs
                folder = args.runs / Path(name).name / f"{args.model}-{precision}-seed{seed}"
                run = lmrec.fit(args.model, data, train, out=folder, resume=True)
                test, fit = run.metrics["test"], run.manifest["fit"]
                for metric in scores[precision]:
                    scores[precision][metric].append(test[metric]["mean"])
                seconds = _seconds_to_best(folder)
                lines.append(f"| {data.name} | {seed} | {precision} | {test['recall@20']['mean']:.4f} | "
                             f"{test['ndcg@20']['mean']:.4f} | {fit['best_epoch']} | {seconds:.1f} |")
                print(lines[-1], flush=True)
        cells = []
        for metric in ("recall@20", "ndcg@20"):
            fp32, bf16 = np.array(scores["fp32"][metric]), np.array(scores["bf16"][metric])
            diff = estimate(bf16 - fp32)
            cells += [f"{diff.mean:+.4f} ± {diff.se:.4f}", f"{paired_test(fp32, bf16).t_pvalue:.2f}"]
        summary.append(f"| {data.name} | {' | '.join(cells)} |")
    lines += [*summary, "", f"Load average (1 min) at the end: {os.getloadavg()[0]:.2f}.", ""]
    write_lines(args.out, lines)


def _seconds_to_best(folder: Path) -> float:
    """Training + validation seconds until the best validation epoch, from the run's per-epoch log."""
    import json

    from lmrec.train.trainer import LOG_FILE

    records = [json.loads(line) for line in (folder / LOG_FILE).read_text(encoding="utf-8").splitlines()]
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    best = manifest["fit"]["best_epoch"]
    return float(sum(r["seconds"] for r in records if r["epoch"] <= best))


if __name__ == "__main__":
    main()
