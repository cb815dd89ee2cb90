"""Train several models on several datasets and write one comparison table (markdown + json).

Each (dataset, run) is an ordinary run folder (``out/<dataset>/<run name>/``); a finished run is reused when its
saved settings agree with the requested ones (and is an error naming the folder when they do not), so an
interrupted comparison resumes where it stopped. A run is a :class:`RunSpec`: a registered model with settings, so
one model can appear several times (e.g. ``linear_map`` with each text encoder). The table reports test
mean ± SE, the epoch selected on validation, and the paired difference of a chosen run against the best other one.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmrec.data.interactions import SplitData
from lmrec.data.registry import DataRef
from lmrec.eval.report import estimate_cell
from lmrec.eval.stats import paired_test
from lmrec.io import atomic_write, write_json
from lmrec.run import Run, fit

COLUMNS = ("recall@20", "ndcg@20", "hr@20")


@dataclass(frozen=True)
class RunSpec:
    """One row of a comparison: ``name`` (the folder and the table label) runs registered ``model`` with
    ``model_overrides`` (its config fields) and ``train_overrides`` (:class:`lmrec.train.TrainConfig` fields)."""

    name: str
    model: str
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    train_overrides: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: str | RunSpec) -> RunSpec:
        return spec if isinstance(spec, RunSpec) else cls(spec, spec)


def run_comparison(
    runs: Sequence[str | RunSpec],
    datasets: Sequence[str],
    out: Path,
    train_overrides: Mapping[str, Any] | None = None,
    focus: str | None = "alpharec",
    seed: int = 2024,
    dataset_train_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run every spec on every dataset. Training settings, later ones winning: ``train_overrides`` (all runs),
    ``dataset_train_overrides[dataset]``, the spec's own. ``jobs`` > 1 runs that many independent runs at once, in
    processes of their own, the CPU threads divided between them (each run as with one job: same seed, same
    result; a run's own determinism does not depend on the others)."""
    specs = [RunSpec.of(r) for r in runs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    tasks = []
    for dataset in datasets:
        for spec in specs:
            train = {**(train_overrides or {}), **(dataset_train_overrides or {}).get(dataset, {}),
                     **spec.train_overrides}
            tasks.append((dataset, RunSpec(spec.name, spec.model, spec.model_overrides, train)))
    if jobs == 1:
        rows = [_fit_row(dataset, spec, seed, out) for dataset, spec in tasks]
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(_fit_row, *zip(*tasks, strict=True), [seed] * len(tasks), [out] * len(tasks),
                                 [threads] * len(tasks)))
    results: dict[str, Any] = {}
    for dataset in datasets:
        data = DataRef.of(dataset, seed=seed).load()
        results[dataset] = {"stats": data.stats(), "checksum": data.checksum(), "models": {
            spec.name: row for (d, spec), row in zip(tasks, rows, strict=True) if d == dataset}}
        if focus in names and len(names) > 1:
            results[dataset]["focus"] = _focus_vs_best(focus, names, out / dataset, results[dataset]["models"], data)
    write_json(out / "results.json", results)
    atomic_write(out / "results.md", lambda f: f.write(markdown(results)))
    return results


def _fit_row(dataset: str, spec: RunSpec, seed: int, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Fit (or reuse) one run and return its table row. ``resume=True``: a finished run with the same settings is
    reused, an interrupted one continues, one with other settings is an error naming the folder."""
    if threads is not None:  # in a worker process of its own
        import torch

        torch.set_num_threads(threads)
    ref = DataRef.of(dataset, seed=seed)
    run = fit(spec.model, ref, dict(spec.train_overrides), out=out / dataset / spec.name, resume=True,
              **spec.model_overrides)
    fitted = run.manifest["fit"]
    return {"model": spec.model, "test": run.metrics["test"], "valid": run.metrics["valid"],
            "best_epoch": fitted.get("best_epoch"), "epochs_run": fitted.get("epochs_run"),
            "converged": fitted.get("converged", True), "fit_seconds": fitted["seconds"]}


def _focus_vs_best(focus: str, models: Sequence[str], folder: Path, rows: dict[str, Any],
                   data: SplitData) -> dict[str, Any]:
    """Relative Recall@20 gain of ``focus`` over the best other model (chosen on VALIDATION), paired test on test."""
    others = [m for m in models if m != focus]
    best = max(others, key=lambda m: rows[m]["valid"]["recall@20"]["mean"])
    per_user = {}
    for name in (best, focus):
        per_user[name] = Run.load(folder / name, data=data).evaluate("test").per_user["recall@20"]
    test = paired_test(per_user[best], per_user[focus])
    base = float(per_user[best].mean())
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
                  "| model | " + " | ".join(COLUMNS) + " | best epoch / run (valid) | fit s |",
                  "|---|" + "---|" * (len(COLUMNS) + 2)]
        for name, row in block["models"].items():
            cells = [estimate_cell(row['test'][c]) for c in COLUMNS]
            epochs = "-" if not row["best_epoch"] else f"{row['best_epoch']} / {row.get('epochs_run') or '?'}" + (
                "" if row.get("converged", True) else " †")
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {epochs} | {row['fit_seconds']:.0f} |")
        if "focus" in block:
            f = block["focus"]
            lines += ["", f"Recall@20 vs the best baseline on validation ({f['best_baseline']}): "
                          f"{100 * f['relative_gain']:+.1f}% "
                          f"(difference {estimate_cell(f['diff'], signed=True)}, "
                          f"paired t p = {f['t_pvalue']:.2g}, Wilcoxon p = {f['wilcoxon_pvalue']:.2g})"]
        lines.append("")
    if any(not row.get("converged", True) for block in results.values() for row in block["models"].values()):
        lines += ["† unconverged: the best validation epoch is the last epoch run (the budget cut it short).", ""]
    return "\n".join(lines)
