"""Train several models on several datasets and write one comparison table (markdown + json).

Each (dataset, run) is an ordinary run folder (``runs_dir/<dataset>/<run name>/``) or, when taken from earlier
records (``reuse``), a record of one (:mod:`lmrec.experiments.records`); a finished run is reused when its saved
settings agree with the requested ones (and is an error naming the folder when they do not), so an interrupted
comparison resumes where it stopped. A run is a :class:`RunSpec`: a registered model with settings, so
one model can appear several times (e.g. ``linear_map`` with each text encoder). Runs of one ``family`` (the
points of a hyper-parameter grid, :func:`grid_specs`) compete for one table row: the one with the best validation
Recall@20 is reported. The table reports test mean ± SE, the epoch selected on validation, and the paired
difference of a chosen family against the best other one (both chosen on validation).
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.data.registry import DataRef
from lmrec.eval.report import estimate_cell
from lmrec.eval.stats import paired_test
from lmrec.experiments.records import matching_record, save_record
from lmrec.io import atomic_write, write_json
from lmrec.run import (
    MANIFEST,
    epochs_summary,
    fit,
    per_user_test_values,
    planned_manifest,
    progress_line,
    read_manifest,
    read_metrics,
)

COLUMNS = ("recall@20", "ndcg@20", "hr@20")


@dataclass(frozen=True)
class RunSpec:
    """One row of a comparison: ``name`` (the folder and the table label) runs registered ``model`` with
    ``model_overrides`` (its config fields) and ``train_overrides`` (:class:`lmrec.train.TrainConfig` fields)."""

    name: str
    model: str
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    family: str = ""  # the table row this run competes for (default: its name)
    edges: tuple[str, ...] = ()  # grid settings at the smallest or largest of their (3 or more numeric) values

    @classmethod
    def of(cls, spec: str | RunSpec) -> RunSpec:
        return spec if isinstance(spec, RunSpec) else cls(spec, spec)

    @property
    def row(self) -> str:
        return self.family or self.name


SELECT_ON = "recall@20"  # validation metric that picks a family's run


def grid_specs(name: str, model: str, model_overrides: Mapping[str, Any], train_overrides: Mapping[str, Any],
               grid: Mapping[str, Sequence[Any]]) -> list[RunSpec]:
    """One run per point of the product of ``grid`` (each key a setting of the model or of training), all of
    family ``name``. A point is named ``name~key=value,...`` by the settings where it differs from the entry's
    own values (the model's defaults unless overridden), so the default point is plain ``name``. Table-wide training
    settings (``run_comparison``'s ``train_overrides``) apply to every point alike and are not part of the names."""
    from lmrec.models.base import get_model
    from lmrec.train import TrainConfig

    cls = get_model(model, "cf")
    model_fields, train_fields = set(cls.Config.__dataclass_fields__), set(TrainConfig.__dataclass_fields__)
    base_model = {**{k: f.default for k, f in cls.Config.__dataclass_fields__.items()}, **model_overrides}
    base_train = {**{k: f.default for k, f in TrainConfig.__dataclass_fields__.items()}, **cls.train_defaults,
                  **train_overrides}
    for key, values in grid.items():
        if key not in model_fields | train_fields:
            raise ValueError(f"grid of {name!r}: {key!r} is neither a {model} setting nor a training setting")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"grid of {name!r}: {key!r} must be a non-empty list of values, got {values!r}")
    specs = []
    for point in itertools.product(*grid.values()):
        chosen = dict(zip(grid, point, strict=True))
        m = {**model_overrides, **{k: v for k, v in chosen.items() if k in model_fields}}
        t = {**train_overrides, **{k: v for k, v in chosen.items() if k not in model_fields}}
        differs = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items()
                   if v != (base_model[k] if k in model_fields else base_train[k])]
        edges = tuple(k for k, v in chosen.items() if len(grid[k]) >= 3 and _numeric(grid[k])
                      and v in (min(grid[k]), max(grid[k])))
        specs.append(RunSpec(name + ("~" + ",".join(differs) if differs else ""), model, m, t, family=name,
                             edges=edges))
    return specs


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def run_comparison(
    runs: Sequence[str | RunSpec],
    datasets: Sequence[str | Mapping[str, str]],
    out: Path,
    train_overrides: Mapping[str, Any] | None = None,
    focus: str | None = "alpharec",
    seed: int = 2024,
    dataset_train_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    jobs: int = 1,
    runs_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
    reuse: Path | None = None,
    records: Path | None = None,
) -> dict[str, Any]:
    """Run every spec on every dataset (a name or path, or ``{"name": label, "dataset": name or path, "split":
    split}``, see :class:`DatasetEntry`). Training settings, later ones winning: ``train_overrides`` (all runs),
    ``dataset_train_overrides[label]``, the spec's own. ``jobs`` > 1 runs that many independent runs at once, in
    processes of their own, the CPU threads divided between them (each run as with one job: same seed, same
    result; a run's own determinism does not depend on the others). Run folders go to ``runs_dir/<dataset>/<name>``
    (default ``out``; another table's folder shares its finished runs), the table to ``out``. ``log`` gets a line
    as each run finishes (or is found finished): where it stands among the runs, its validation score and epochs.
    ``reuse``: a folder of records (:mod:`lmrec.experiments.records`, laid out as the run folders); a run not yet in
    ``runs_dir`` whose record there has the same settings and data is taken from it, not trained. ``records``: each
    finished run's record is written there as it finishes."""
    runs_dir = Path(runs_dir or out)
    specs = [RunSpec.of(r) for r in runs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    entries = [DatasetEntry.of(d, seed) for d in datasets]
    folders = [e.folder for e in entries]
    if len(set(folders)) != len(folders):
        raise ValueError(f"datasets {list(datasets)} would share run folders {folders}: give them distinct names")
    tasks = []
    for entry in entries:
        for spec in specs:
            train = {**(train_overrides or {}), **(dataset_train_overrides or {}).get(entry.label, {}),
                     **spec.train_overrides}
            tasks.append((entry, dataclasses.replace(spec, train_overrides=train)))
    rows: list[dict[str, Any]] = [{}] * len(tasks)
    finished = 0

    def done(i: int, row: dict[str, Any]) -> None:
        nonlocal finished
        rows[i], finished = row, finished + 1
        if log is not None:
            entry, spec = tasks[i]
            log(f"{finished}/{len(tasks)} " + progress_line(f"{entry.label} / {spec.name}", SELECT_ON,
                                                             row["valid"][SELECT_ON]["mean"], row, row["fit_seconds"])
                + (" (recorded run)" if row["source"] != str(runs_dir / entry.folder / spec.name) else "")
                + (f" ({row['note']})" if row["note"] else ""))

    if jobs == 1:
        for i, (entry, spec) in enumerate(tasks):
            done(i, _fit_row(entry, spec, runs_dir, None, reuse, records))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_fit_row, entry, spec, runs_dir, threads, reuse, records): i
                       for i, (entry, spec) in enumerate(tasks)}
            try:
                for future in as_completed(futures):
                    done(futures[future], future.result())
            except BaseException:  # a failed run (or ^C) stops the table: the queued runs are not started
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    results: dict[str, Any] = {}
    sources = {(e.label, spec.name): Path(row.pop("source")) for (e, spec), row in zip(tasks, rows, strict=True)}
    for row in rows:
        del row["note"]
    for entry in entries:
        data = entry.ref.load()
        block = results[entry.label] = {"stats": data.stats(), "checksum": data.checksum(), "models": {
            spec.name: {**row, "family": spec.row, "grid_edges": list(spec.edges)}
            for (e, spec), row in zip(tasks, rows, strict=True) if e == entry}}
        block["selected"] = select_per_family(block["models"])
        if focus in block["selected"] and len(block["selected"]) > 1:
            block["focus"] = _focus_vs_best(focus, block["selected"], block["models"],
                                            {name: sources[entry.label, name] for name in block["models"]})
    write_json(out / "results.json", results)
    atomic_write(out / "results.md", lambda f: f.write(markdown(results)))
    return results


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a comparison: its ``label`` in the table, the ``folder`` of its runs under the runs folder
    and how to load it (``ref``)."""

    label: str
    folder: str
    ref: DataRef

    @classmethod
    def of(cls, entry: str | Mapping[str, str], seed: int) -> DatasetEntry:
        """A registered name or a path (label as given; folder: a name as it is, a path by its last part, so runs
        never go inside the data folder), or ``{"name", "dataset", "split"}``: the dataset with another split (e.g.
        ``ratio:0.4,0.3,0.3+thin:0.1``), labelled and foldered by ``name``."""
        if isinstance(entry, str):
            folder = Path(entry).name if ("/" in entry or os.sep in entry) else entry
            return cls(entry, folder, DataRef.of(entry, seed=seed))
        unknown, missing = set(entry) - {"name", "dataset", "split"}, {"name", "dataset"} - set(entry)
        if unknown or missing:
            raise ValueError(f"dataset entry {dict(entry)}: expected name, dataset and optionally split "
                             f"({'unknown ' + str(sorted(unknown)) if unknown else 'missing ' + str(sorted(missing))})")
        if "/" in entry["name"] or os.sep in entry["name"]:
            raise ValueError(f"dataset entry name {entry['name']!r} names a folder: no '/' in it")
        return cls(entry["name"], entry["name"], DataRef.of(entry["dataset"], split=entry.get("split"), seed=seed))


def _fit_row(entry: DatasetEntry, spec: RunSpec, out: Path, threads: int | None = None,
             reuse: Path | None = None, records: Path | None = None) -> dict[str, Any]:
    """Fit (or reuse) one run and return its table row, with ``source``: the folder its numbers come from.
    ``resume=True``: a finished run with the same settings is reused, an interrupted one continues, one with other
    settings is an error naming the folder. A run not begun in ``out`` is taken from a matching record in
    ``reuse``; its record is written to ``records``."""
    if threads is not None:  # in a worker process of its own
        import torch

        from lmrec.allocator import keep_freed_memory

        torch.set_num_threads(threads)
        keep_freed_memory()
    ref = entry.ref
    where = Path(entry.folder) / spec.name
    source, data, train, note = out / where, ref, dict(spec.train_overrides), ""
    if reuse is not None and not (source / MANIFEST).exists():
        wanted, data = planned_manifest(spec.model, ref, train, **spec.model_overrides)
        usable, why = matching_record(reuse / where, wanted)
        if usable:
            source = reuse / where
        elif why != "no record":
            note = f"its record not used: {why}"
    if source == out / where:
        fit(spec.model, data, train, ref=ref, out=source, resume=True, **spec.model_overrides)
    if records is not None:
        save_record(source, records / where)
    fitted, metrics = read_manifest(source)["fit"], read_metrics(source)
    return {"model": spec.model, "test": metrics["test"], "valid": metrics["valid"],
            "best_epoch": fitted.get("best_epoch"), "epochs_run": fitted.get("epochs_run"),
            "converged": fitted.get("converged", True), "stopped": fitted.get("stopped"),
            "fit_seconds": fitted["seconds"], "source": str(source), "note": note}


def select_per_family(rows: Mapping[str, Any]) -> dict[str, str]:
    """{family: the name of its run with the best validation Recall@20}, in first-seen order (ties: the first)."""
    chosen: dict[str, str] = {}
    for name, row in rows.items():
        best = chosen.get(row["family"])
        if best is None or row["valid"][SELECT_ON]["mean"] > rows[best]["valid"][SELECT_ON]["mean"]:
            chosen[row["family"]] = name
    return chosen


def _focus_vs_best(focus: str, selected: Mapping[str, str], rows: dict[str, Any],
                   folders: Mapping[str, Path]) -> dict[str, Any]:
    """Relative Recall@20 gain of family ``focus`` over the best other family, each represented by its run chosen
    on VALIDATION and the best family chosen on VALIDATION too; paired test over the test users (the values per user
    from each run's folder or record)."""
    others = [selected[f] for f in selected if f != focus]
    best, mine = max(others, key=lambda m: rows[m]["valid"][SELECT_ON]["mean"]), selected[focus]
    (users_best, best_values), (users_mine, mine_values) = map(per_user_test_values, (folders[best], folders[mine]))
    if not np.array_equal(users_best, users_mine):
        raise ValueError(f"{folders[best]} and {folders[mine]} were tested on different users: no paired test")
    test = paired_test(best_values[SELECT_ON], mine_values[SELECT_ON])
    base = float(best_values[SELECT_ON].mean())
    return {"best_baseline": best, "focus_run": mine, "relative_gain": test.diff.mean / base if base else float("nan"),
            "diff": test.diff.as_dict(), "t_pvalue": test.t_pvalue, "wilcoxon_pvalue": test.wilcoxon_pvalue}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for dataset, block in results.items():
        s, rows = block["stats"], block["models"]
        selected = block.get("selected") or {name: name for name in rows}
        lines += [f"### {dataset}", "",
                  f"{s['users']} users, {s['items']} items, train/valid/test {s['train']}/{s['valid']}/{s['test']} "
                  f"interactions ({s['protocol']}). Test, full ranking, train+valid masked, mean ± SE over "
                  f"{next(iter(rows.values()))['test']['recall@20']['n']} users.", "",
                  "| model | " + " | ".join(COLUMNS) + " | best epoch / run (valid), why it stopped | fit s |",
                  "|---|" + "---|" * (len(COLUMNS) + 2)]
        for family, name in selected.items():
            row = rows[name]
            cells = [estimate_cell(row['test'][c]) for c in COLUMNS]
            label = family if name == family else f"{family} ({name.partition('~')[2]})"
            label += " ‡" if row.get("grid_edges") else ""
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {epochs_summary(row)} | {row['fit_seconds']:.0f} |")
        if "focus" in block:
            f = block["focus"]
            lines += ["", f"Recall@20 vs the best baseline on validation ({f['best_baseline']}): "
                          f"{100 * f['relative_gain']:+.1f}% "
                          f"(difference {estimate_cell(f['diff'], signed=True)}, "
                          f"paired t p = {f['t_pvalue']:.2g}, Wilcoxon p = {f['wilcoxon_pvalue']:.2g})"]
        if len(selected) < len(rows):
            lines += ["", f"Grid points (validation {SELECT_ON}; the row above is each model's best, ✓):", "",
                      f"| model | point | valid {SELECT_ON} | best epoch / run |", "|---|---|---|---|"]
            for name, row in rows.items():
                point = name.partition("~")[2] or "defaults"
                mark = " ✓" if selected.get(row["family"]) == name else ""
                lines.append(f"| {row['family']} | {point}{mark} | {estimate_cell(row['valid'][SELECT_ON])} | "
                             f"{epochs_summary(row)} |")
        lines.append("")
    if any(not row.get("converged", True) for block in results.values() for row in block["models"].values()):
        lines += ["† unconverged: the best validation epoch is the last epoch run (the budget cut it short).", ""]
    edges = sorted({k for block in results.values() for name in block.get("selected", {}).values()
                    for k in block["models"][name].get("grid_edges", [])})
    if edges:
        lines += [f"‡ the point chosen on validation is at the edge of its grid ({', '.join(edges)}): a wider grid "
                  "might do better.", ""]
    return "\n".join(lines)


