"""Train several models on several datasets and write one comparison table (markdown + json).

Each (dataset, model) is an ordinary run folder (``out/<dataset>/<model>/``); a finished run is reused, so an
interrupted comparison resumes where it stopped. The table reports test mean ± SE, the epoch selected on
validation, and the paired difference of a chosen model against the best other model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmrec.eval.ranking import evaluate
from lmrec.eval.stats import paired_test
from lmrec.experiments.runner import DataRef, load_run, train_and_evaluate
from lmrec.io import atomic_write, write_json

COLUMNS = ("recall@20", "ndcg@20", "hr@20")


def run_comparison(
    models: Sequence[str],
    datasets: Sequence[str],
    out: Path,
    train_overrides: dict[str, dict[str, Any]] | None = None,
    model_overrides: dict[str, dict[str, Any]] | None = None,
    focus: str | None = "alpharec",
    seed: int = 2024,
) -> dict[str, Any]:
    """Run every model on every dataset (``train_overrides[model]`` / ``model_overrides[model]`` apply)."""
    results: dict[str, Any] = {}
    for dataset in datasets:
        ref = DataRef(dataset, seed=seed)
        data = ref.load()
        results[dataset] = {"stats": data.stats(), "models": {}}
        for name in models:
            run_dir = out / dataset / name
            if (run_dir / "metrics.json").exists():
                metrics = json.loads((run_dir / "metrics.json").read_text())
                config = json.loads((run_dir / "config.json").read_text())
            else:
                run = train_and_evaluate(name, ref, (model_overrides or {}).get(name),
                                         (train_overrides or {}).get(name), run_dir, data=data)
                metrics, config = run.metrics, run.config
            results[dataset]["models"][name] = {
                "test": metrics["test"], "valid": metrics["valid"],
                "best_epoch": config["best_epoch"], "fit_seconds": config["fit_seconds"],
            }
        if focus in models and len(models) > 1:
            results[dataset]["focus"] = _focus_vs_best(focus, models, out / dataset, results[dataset]["models"])
    write_json(out / "results.json", results)
    atomic_write(out / "results.md", lambda f: f.write(markdown(results)))
    return results


def _focus_vs_best(focus: str, models: Sequence[str], folder: Path, rows: dict[str, Any]) -> dict[str, Any]:
    """Relative Recall@20 gain of ``focus`` over the best other model (chosen on VALIDATION), paired test on test."""
    others = [m for m in models if m != focus]
    best = max(others, key=lambda m: rows[m]["valid"]["recall@20"]["mean"])
    per_user = {}
    for name in (best, focus):
        model, data, _ = load_run(folder / name)
        per_user[name] = evaluate(model.score, data, "test", metrics=("recall",)).per_user["recall@20"]
    test = paired_test(per_user[best], per_user[focus])
    base = rows[best]["test"]["recall@20"]["mean"]
    return {"best_baseline": best, "relative_gain": test.diff.mean / base if base else float("nan"),
            "diff": test.diff.as_dict(), "t_pvalue": test.t_pvalue, "wilcoxon_pvalue": test.wilcoxon_pvalue}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for dataset, block in results.items():
        s = block["stats"]
        lines += [f"### {dataset}", "",
                  f"{s['users']} users, {s['items']} items, train/valid/test {s['train']}/{s['valid']}/{s['test']} "
                  f"interactions ({s['protocol']}). Test, full ranking, train+valid masked, mean ± SE over "
                  f"{next(iter(block['models'].values()))['test']['recall@20']['n']} users.", "",
                  "| model | " + " | ".join(COLUMNS) + " | best epoch (valid) | fit s |",
                  "|---|" + "---|" * (len(COLUMNS) + 2)]
        for name, row in block["models"].items():
            cells = [f"{row['test'][c]['mean']:.4f} ± {row['test'][c]['se']:.4f}" for c in COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['best_epoch'] or '-'} | {row['fit_seconds']:.0f} |")
        if "focus" in block:
            f = block["focus"]
            lines += ["", f"Recall@20 vs the best baseline on validation ({f['best_baseline']}): "
                          f"{100 * f['relative_gain']:+.1f}% (difference {f['diff']['mean']:+.4f} ± {f['diff']['se']:.4f}, "
                          f"paired t p = {f['t_pvalue']:.2g}, Wilcoxon p = {f['wilcoxon_pvalue']:.2g})"]
        lines.append("")
    return "\n".join(lines)
