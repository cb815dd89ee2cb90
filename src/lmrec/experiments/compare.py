"""Train several models on several datasets and write one comparison table (markdown + json).

Each (dataset, run) is an ordinary run folder (``runs_dir/<dataset slug>/<run slug>/``, :func:`slug`) or, when taken
from earlier records (``reuse``), a record of one (:mod:`lmrec.experiments.records`); a finished run is reused when
its saved settings agree with the requested ones (and is an error naming the folder when they do not), so an
interrupted comparison resumes where it stopped. A run is a :class:`RunSpec`: a registered model with settings, so
one model can appear several times (e.g. ``linear_map`` with each text encoder). Runs of one ``family`` (the points
of a hyper-parameter grid, :func:`grid_specs`) compete for one table row: the one with the best validation
Recall@20 is reported.

The stages, each deterministic given the finished runs (so a resumed comparison takes the same decisions):

1. every grid point at the tuning seed (``seeds[0]``);
2. ``widen``: a family whose chosen point is at an edge of its one-setting grid, and whose validation Recall@20 is
   within 10% of the best family's, gets the next point past that edge (:func:`next_value`), until its choice is
   inside its grid (at most :data:`MAX_WIDENING` points added): one tuning rule for every model;
3. each family's chosen point at the other ``seeds`` (training seeds: sampling and initialisation; the data split is
   the dataset's own), and then the focus family and the best other family at ``focus_seeds`` too (every family
   reaches the table's seeds before any focus seed is trained).

The table reports test mean ± SE over the seeds (per-user SE beside it), the epoch selected on validation, and the
difference of a chosen family against the best other one (both chosen on validation): per seed and pooled (paired
tests over users), and Welch's t over the seeds' means.

With ``finished_only`` nothing is trained: the stages run on the runs already finished (in the runs folder or as
records), and each dataset's block lists the planned runs it lacks (``missing``, each with the mean fit time of its
family's finished runs as an estimate, where there are some). That is a long table's progress,
e.g. one seed of five; its decisions (widening, the best other family) are those of the finished runs so far.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmrec.data.registry import DataRef
from lmrec.eval.report import epochs_summary, estimate_cell, progress_line
from lmrec.eval.stats import estimate, paired_test
from lmrec.experiments.records import is_complete, matching_record, save_record
from lmrec.io import atomic_write, write_json
from lmrec.run import (
    MANIFEST,
    fit,
    per_user_test_values,
    planned_manifest,
    read_manifest,
    read_metrics,
)

COLUMNS = ("recall@20", "ndcg@20", "hr@20")
BEYOND_COLUMNS = ("coverage@20", "novelty@20")  # runs made before they were recorded show "–"
SELECT_ON = "recall@20"  # validation metric that picks a family's run
WIDEN_WITHIN = 0.10  # a family at a grid edge is widened when its validation score is within 10% of the best
MAX_WIDENING = 4  # points a widening adds to one family at most


def slug(label: str) -> str:
    """A folder name for a run or dataset label: lowercase letters, digits, ``.``, ``_`` and ``-`` only, e.g.
    ``alpharec~tau=0.2,seed=2025`` -> ``alpharec_tau-0.2_seed-2025``, ``movielens-100k, train 10%`` ->
    ``movielens-100k_train-10pct`` (labels stay in the manifests and tables)."""
    text = label.lower().replace("%", "pct")
    text = re.sub(r"\s*[~,]\s*", "_", text)
    text = re.sub(r"[=\s@:/\\]+", "-", text)
    text = re.sub(r"[^a-z0-9._-]", "", text).strip("-_.")
    if not text:
        raise ValueError(f"label {label!r} has no letters or digits to name a folder with")
    return text


@dataclass(frozen=True)
class RunSpec:
    """One row of a comparison: ``name`` (the table label; its folder is :func:`slug` of it) runs registered
    ``model`` with ``model_overrides`` (its config fields) and ``train_overrides`` (:class:`lmrec.train.TrainConfig`
    fields)."""

    name: str
    model: str
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    family: str = ""  # the table row this run competes for (default: its name)
    edges: tuple[str, ...] = ()  # grid settings at the smallest or largest of their (3 or more numeric) values
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # the family's grid (for widening)
    point: str = ""  # the grid point this run replicates at another seed (default: its name)

    @classmethod
    def of(cls, spec: str | RunSpec) -> RunSpec:
        return spec if isinstance(spec, RunSpec) else cls(spec, spec)

    @property
    def row(self) -> str:
        return self.family or self.name

    @property
    def folder(self) -> str:
        return slug(self.name)

    def at_seed(self, seed: int) -> RunSpec:
        """The same point trained with another seed (``name~...,seed=S``)."""
        sep = "," if "~" in self.name else "~"
        return dataclasses.replace(self, name=f"{self.name}{sep}seed={seed}", point=self.name,
                                   train_overrides={**self.train_overrides, "seed": seed})


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
    frozen = {k: tuple(v) for k, v in grid.items()}
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
                             edges=edges, grid=frozen))
    return specs


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def next_value(values: Sequence[float], upward: bool) -> float:
    """The next grid value past the largest (``upward``) or smallest of ``values``: the grid's own step at that end,
    arithmetic where the two outermost steps are equal (τ 0.1, 0.15, 0.2 -> 0.25), else geometric (lr 5e-4, 1e-3,
    2e-3 -> 4e-3), rounded to two significant digits; an arithmetic step down to 0 or below halves instead."""
    v = sorted(values)
    if upward:
        v = [-x for x in reversed(v)]  # the same rule, mirrored
    edge, inner = v[0], v[1]
    steps = np.diff(v[:3]) if len(v) >= 3 else np.array([inner - edge])
    arithmetic = len(steps) == 1 or math.isclose(steps[0], steps[1], rel_tol=1e-6)
    if upward:
        edge, inner = -edge, -inner
        new = edge + (edge - inner) if arithmetic else edge * edge / inner
    else:
        new = edge - (inner - edge) if arithmetic else edge * edge / inner
        if new <= 0 < edge:
            new = edge / 2
    return round(new, 10) if arithmetic else float(f"{new:.2g}")


def widened(spec: RunSpec, value: float) -> RunSpec | None:
    """The run of ``spec``'s family at ``value`` of its one-setting grid (None when the setting is not valid there)."""
    from lmrec.models.base import get_model
    from lmrec.settings import SettingsError, build
    from lmrec.train import TrainConfig

    (key, values), = spec.grid.items()
    grid = {key: sorted({*values, value})}
    model_fields = set(get_model(spec.model, "cf").Config.__dataclass_fields__)
    base_m = {k: v for k, v in spec.model_overrides.items() if k != key}
    base_t = {k: v for k, v in spec.train_overrides.items() if k != key}
    try:
        build(get_model(spec.model, "cf").Config, {**base_m, key: value}) if key in model_fields else build(
            TrainConfig, {**base_t, key: value})
    except SettingsError:
        return None
    fresh = grid_specs(spec.row, spec.model, base_m, base_t, {key: [value]})[0]
    return dataclasses.replace(fresh, grid={key: tuple(grid[key])})


@dataclass
class _Board:
    """The comparison's runs so far: specs and rows by (dataset label, run name)."""

    specs: dict[tuple[str, str], RunSpec] = field(default_factory=dict)
    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def family_rows(self, label: str) -> dict[str, dict[str, Any]]:
        return {name: row for (lab, name), row in self.rows.items() if lab == label}

    def family_of(self, label: str, name: str) -> str:
        """The table row a run counts for (a seed replicate: its grid point's)."""
        spec = self.specs[label, name]
        return self.specs[label, spec.point].row if spec.point else spec.row

    def tuning(self, label: str) -> dict[str, dict[str, Any]]:
        """The rows of the tuning stage (not seed replicates) of one dataset."""
        return {name: row for name, row in self.family_rows(label).items()
                if not self.specs[label, name].point}


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
    seeds: Sequence[int] | None = None,
    focus_seeds: Sequence[int] | None = None,
    widen: bool = False,
    finished_only: bool = False,
) -> dict[str, Any]:
    """Run every spec on every dataset (a name or path, or ``{"name": label, "dataset": name or path, "split":
    split}``, see :class:`DatasetEntry`) through the stages of the module docstring. Training settings, later ones
    winning: ``train_overrides`` (all runs), ``dataset_train_overrides[label]``, the spec's own. ``seed``: of the
    data split; ``seeds``: training seeds (default: the training settings' own, one seed); ``focus_seeds``: more
    seeds for ``focus`` and the best other family. ``jobs`` > 1 runs that many independent runs at once, in
    processes of their own, the CPU threads divided between them (each run as with one job: same seed, same result).
    Run folders go to ``runs_dir/<dataset>/<run>`` (default ``out``; another table's folder shares its finished
    runs), the table to ``out``. ``log`` gets a line as each run finishes (or is found finished): where it stands
    among the runs planned so far, its validation score and epochs. ``reuse``: a folder of records
    (:mod:`lmrec.experiments.records`, laid out as the run folders); a run not yet in ``runs_dir`` whose record
    there has the same settings and data is taken from it, not trained. ``records``: each finished run's record is
    written there as it finishes. ``finished_only``: only finished runs count, the others are listed in ``missing``
    (module docstring)."""
    runs_dir = Path(runs_dir or out)
    specs = [RunSpec.of(r) for r in runs]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique, got {names}")
    folders = [s.folder for s in specs]
    if len(set(folders)) != len(folders):
        raise ValueError(f"run names {names} would share run folders {folders}: give them distinct names")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    seeds, focus_seeds = list(seeds or []), list(focus_seeds or [])
    if len(set(seeds)) != len(seeds) or len(set(focus_seeds)) != len(focus_seeds):
        raise ValueError(f"seeds must be distinct, got {seeds} and focus seeds {focus_seeds}")
    if focus_seeds and not seeds:
        raise ValueError("focus seeds go with seeds (the first of which tunes): give seeds too")
    entries = [DatasetEntry.of(d, seed) for d in datasets]
    if len({e.folder for e in entries}) != len(entries):
        raise ValueError(f"datasets {list(datasets)} would share run folders {[e.folder for e in entries]}: give "
                         "them distinct names")
    by_label = {e.label: e for e in entries}
    board, planned = _Board(), 0
    missing: dict[str, list[str]] = {e.label: [] for e in entries}

    def train_of(entry: DatasetEntry, spec: RunSpec) -> RunSpec:
        train = {**(train_overrides or {}), **(dataset_train_overrides or {}).get(entry.label, {}),
                 **spec.train_overrides}
        if seeds and not spec.point:
            train.setdefault("seed", seeds[0])
        return dataclasses.replace(spec, train_overrides=train)

    def run_stage(tasks: list[tuple[DatasetEntry, RunSpec]]) -> None:
        nonlocal planned
        tasks = [(e, train_of(e, s)) for e, s in tasks if (e.label, s.name) not in board.specs]
        planned += len(tasks)
        for entry, spec in tasks:
            board.specs[entry.label, spec.name] = spec
        outcome = _run_tasks(tasks, runs_dir, jobs, reuse, records, finished_only)
        for entry, spec, row in outcome:
            if row is None:
                missing[entry.label].append(spec.name)
                if log is not None:
                    log(f"{entry.label} / {spec.name}: not finished, left out (nothing is trained)")
                continue
            board.rows[entry.label, spec.name] = row = {**row, "family": spec.row}
            if log is not None:
                log(f"{len(board.rows)}/{planned} "
                    + progress_line(f"{entry.label} / {spec.name}", SELECT_ON, row["valid"][SELECT_ON]["mean"], row,
                                    row["fit_seconds"])
                    + (" (recorded run)" if row["source"] != str(runs_dir / entry.folder / spec.folder) else "")
                    + (f" ({row['note']})" if row["note"] else ""))

    run_stage([(e, s) for e in entries for s in specs])
    for _ in range(MAX_WIDENING if widen else 0):
        extra = [(by_label[label], s) for label in by_label for s in _widenings(board, label)]
        if not extra:
            break
        run_stage(extra)
    replicate, more = [], []  # every family at the table's seeds first, then the focus pair's extra seeds: a table
    for entry in entries:  # stopped between the two has every model at the same seeds
        chosen = select_per_family(board.tuning(entry.label))
        for family, name in chosen.items():
            if not _trains(board.specs[entry.label, name].model):
                continue  # nothing random to replicate
            spec = board.specs[entry.label, name]
            replicate += [(entry, spec.at_seed(s)) for s in seeds[1:]]
            if family in _focus_pair(focus, chosen, board.tuning(entry.label)):
                more += [(entry, spec.at_seed(s)) for s in focus_seeds if s not in seeds]
    run_stage(replicate + more)
    return _results(entries, board, focus, runs_dir, out, missing)


def _widenings(board: _Board, label: str) -> list[RunSpec]:
    """The next point of each family whose choice sits at an edge of its one-setting numeric grid and whose
    validation score is within :data:`WIDEN_WITHIN` of the best family's (stage 2 of the module docstring)."""
    rows = board.tuning(label)
    chosen = select_per_family(rows)
    if not chosen:
        return []
    best = max(rows[name]["valid"][SELECT_ON]["mean"] for name in chosen.values())
    extra = []
    for name in chosen.values():
        spec = board.specs[label, name]
        if len(spec.grid) != 1 or rows[name]["valid"][SELECT_ON]["mean"] < (1 - WIDEN_WITHIN) * best:
            continue
        (key, values), = spec.grid.items()
        tried = sorted({v for other, s in board.specs.items() if other[0] == label and s.row == spec.row
                        and not s.point for v in s.grid.get(key, ())})
        if len(tried) < 3 or not _numeric(tried):
            continue
        value = {**spec.model_overrides, **spec.train_overrides}.get(key, _default(spec, key))
        if value not in (tried[0], tried[-1]):
            continue
        new = widened(dataclasses.replace(spec, grid={key: tuple(tried)}), next_value(tried, value == tried[-1]))
        if new is not None and (label, new.name) not in board.specs:
            extra.append(new)
    return extra


def _default(spec: RunSpec, key: str) -> Any:
    """The value of setting ``key`` (the model's or training's) when ``spec`` does not set it."""
    from lmrec.models.base import get_model
    from lmrec.train import TrainConfig

    cls = get_model(spec.model, "cf")
    if key in cls.Config.__dataclass_fields__:
        return cls.Config.__dataclass_fields__[key].default
    return cls.train_defaults.get(key, TrainConfig.__dataclass_fields__[key].default)


def _trains(model: str) -> bool:
    from lmrec.models.base import get_model

    return get_model(model, "cf").trainable


def _focus_pair(focus: str | None, chosen: Mapping[str, str], rows: Mapping[str, Any]) -> set[str]:
    """The focus family and the best other family on validation (tuning seed)."""
    if focus not in chosen or len(chosen) < 2:
        return set()
    others = [f for f in chosen if f != focus]
    return {focus, max(others, key=lambda f: rows[chosen[f]]["valid"][SELECT_ON]["mean"])}


def _run_tasks(tasks: list[tuple[DatasetEntry, RunSpec]], runs_dir: Path, jobs: int, reuse: Path | None,
               records: Path | None, finished_only: bool = False
               ) -> Iterator[tuple[DatasetEntry, RunSpec, dict[str, Any] | None]]:
    """Fit (or reuse) each task, in processes of their own when ``jobs`` > 1; each row as soon as its run is done
    (None: not finished, and ``finished_only``)."""
    if jobs == 1 or finished_only:  # reading finished runs needs no processes
        for entry, spec in tasks:
            yield entry, spec, _fit_row(entry, spec, runs_dir, None, reuse, records, finished_only)
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_fit_row, entry, spec, runs_dir, threads, reuse, records): (entry, spec)
                   for entry, spec in tasks}
        try:
            for future in as_completed(futures):
                yield *futures[future], future.result()
        except Exception:  # a failed run stops the table: the runs under way finish, the queued ones do not start
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        except BaseException:  # ^C, SIGTERM, or the table abandoned: the runs stop now (each resumes from its
            for process in list(getattr(pool, "_processes", {}).values()):  # checkpoint); no public way before 3.14
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _results(entries: Sequence[DatasetEntry], board: _Board, focus: str | None, runs_dir: Path,
             out: Path, missing: Mapping[str, list[str]]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for entry in entries:
        data = entry.ref.load()
        models = {}
        for name, row in board.family_rows(entry.label).items():
            spec = board.specs[entry.label, name]
            row = {k: v for k, v in row.items() if k != "note"}
            models[name] = {**row, "family": spec.row, "point": spec.point or name,
                            "seed": spec.train_overrides.get("seed"), "grid_edges": list(_edges(board, entry.label,
                                                                                                  spec))}
        block = results[entry.label] = {"stats": data.stats(), "checksum": data.checksum(), "models": models}
        if missing.get(entry.label):
            seconds: dict[str, list[float]] = {}
            for name, row in board.family_rows(entry.label).items():
                seconds.setdefault(board.family_of(entry.label, name), []).append(row["fit_seconds"])
            block["missing"] = [_missing_run(name, board.family_of(entry.label, name), seconds)
                                for name in missing[entry.label]]
        block["selected"] = select_per_family({n: r for n, r in models.items() if r["point"] == n})
        block["replicates"] = {family: [n for n, r in models.items() if r["point"] == name]
                               for family, name in block["selected"].items()}
        if focus in block["selected"] and len(block["selected"]) > 1:
            block["focus"] = _focus_vs_best(focus, block, {n: Path(r.pop("source")) for n, r in models.items()})
        for row in models.values():
            row.pop("source", None)
    write_json(out / "results.json", results)
    atomic_write(out / "results.md", lambda f: f.write(markdown(results)))
    return results


def _missing_run(name: str, family: str, seconds: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """A planned run not finished: its name, family and estimated seconds (the mean of ``seconds[family]``, the fit
    times of the family's finished runs; None when it has none)."""
    known = seconds.get(family)
    return {"run": name, "family": family, "estimated_seconds": float(np.mean(known)) if known else None}


def _unfinished_line(missing: Sequence[Mapping[str, Any]]) -> str:
    """The sentence under a table that lists its planned runs not finished yet, with their estimated hours."""
    known = [m["estimated_seconds"] for m in missing if m["estimated_seconds"] is not None]
    cost = (f"; ≈ {sum(known) / 3600:.1f} h for the {len(known)} whose model has finished runs, at their mean fit "
            "time" if known else "")
    runs = ", ".join(m["run"] + (f" (≈ {m['estimated_seconds'] / 3600:.1f} h)" if m["estimated_seconds"] is not None
                                 else "") for m in missing)
    return f"Not finished yet, so left out ({len(missing)} planned runs{cost}): {runs}."


def _edges(board: _Board, label: str, spec: RunSpec) -> tuple[str, ...]:
    """The settings at which ``spec`` sits at the smallest or largest value its family tried (3+ numeric values)."""
    if spec.point:
        return ()
    tried: dict[str, set] = {}
    for (lab, _), other in board.specs.items():
        if lab == label and other.row == spec.row and not other.point:
            for key, values in other.grid.items():
                tried.setdefault(key, set()).update(values)
    settings = {**spec.model_overrides, **spec.train_overrides}
    return tuple(k for k, vals in tried.items() if len(vals) >= 3 and _numeric(list(vals))
                 and settings.get(k, _default(spec, k)) in (min(vals), max(vals)))


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a comparison: its ``label`` in the table, the ``folder`` of its runs under the runs folder
    (:func:`slug` of the label) and how to load it (``ref``)."""

    label: str
    folder: str
    ref: DataRef

    @classmethod
    def of(cls, entry: str | Mapping[str, str], seed: int) -> DatasetEntry:
        """A registered name or a path (label as given; folder: a name as it is, a path by its last part, so runs
        never go inside the data folder), or ``{"name", "dataset", "split"}``: the dataset with another split (e.g.
        ``ratio:0.4,0.3,0.3+thin:0.1``), labelled and foldered by ``name``."""
        if isinstance(entry, str):
            label = Path(entry).name if ("/" in entry or os.sep in entry) else entry
            return cls(entry, slug(label), DataRef.of(entry, seed=seed))
        unknown, missing = set(entry) - {"name", "dataset", "split"}, {"name", "dataset"} - set(entry)
        if unknown or missing:
            raise ValueError(f"dataset entry {dict(entry)}: expected name, dataset and optionally split "
                             f"({'unknown ' + str(sorted(unknown)) if unknown else 'missing ' + str(sorted(missing))})")
        if "/" in entry["name"] or os.sep in entry["name"]:
            raise ValueError(f"dataset entry name {entry['name']!r} names a folder: no '/' in it")
        return cls(entry["name"], slug(entry["name"]), DataRef.of(entry["dataset"], split=entry.get("split"),
                                                                   seed=seed))


def _fit_row(entry: DatasetEntry, spec: RunSpec, out: Path, threads: int | None = None,
             reuse: Path | None = None, records: Path | None = None, finished_only: bool = False
             ) -> dict[str, Any] | None:
    """Fit (or reuse) one run and return its table row, with ``source``: the folder its numbers come from.
    ``resume=True``: a finished run with the same settings is reused, an interrupted one continues, one with other
    settings is an error naming the folder. A run not begun in ``out`` is taken from a matching record in
    ``reuse``; its record is written to ``records``. ``finished_only``: None for a run not finished (nothing fitted);
    a finished run's settings are checked as when training."""
    if threads is not None:  # in a worker process of its own
        import torch

        from lmrec.allocator import keep_freed_memory

        torch.set_num_threads(threads)
        keep_freed_memory()
    ref = entry.ref
    where = Path(entry.folder) / spec.folder
    source, data, train, note = out / where, ref, dict(spec.train_overrides), ""
    if reuse is not None and not (source / MANIFEST).exists():
        wanted, data = planned_manifest(spec.model, ref, train, **spec.model_overrides)
        usable, why = matching_record(reuse / where, wanted)
        if usable:
            source = reuse / where
        elif why != "no record":
            note = f"its record not used: {why}"
    if source == out / where:
        if finished_only and not is_complete(source):
            return None
        fit(spec.model, data, train, ref=ref, out=source, resume=True, label=spec.name, **spec.model_overrides)
    if records is not None:
        save_record(source, records / where)
    fitted, metrics = read_manifest(source)["fit"], read_metrics(source)
    return {"model": spec.model, "test": metrics["test"], "valid": metrics["valid"],
            "best_epoch": fitted.get("best_epoch"), "epochs_run": fitted.get("epochs_run"),
            "steps_run": fitted.get("steps_run"), "steps_to_best": fitted.get("steps_to_best"),
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


def family_estimate(block: Mapping[str, Any], family: str, metric: str = SELECT_ON, split: str = "test"
                    ) -> dict[str, Any]:
    """A family's ``metric``: over its seeds, mean ± SE of the seeds' means (``over``: "seeds", ``n`` seeds) with
    the mean per-user SE beside it (``user_se``); at one seed the per-user estimate (``over``: "users")."""
    names = block.get("replicates", {}).get(family) or [block["selected"][family]]
    cells = [block["models"][n][split].get(metric) for n in names]
    if any(c is None for c in cells):  # a run recorded before the metric was: nothing to show
        return {"mean": None, "se": None, "n": 0, "over": "users"}
    if len(cells) == 1:
        return {**cells[0], "over": "users"}
    seed_means = estimate(np.array([c["mean"] for c in cells]))
    user_se = [c["se"] for c in cells if c.get("se") is not None]  # coverage is one number per run: no user SE
    return {**seed_means.as_dict(), "over": "seeds", **({"user_se": float(np.mean(user_se))} if user_se else {})}


def _focus_vs_best(focus: str, block: Mapping[str, Any], folders: Mapping[str, Path]) -> dict[str, Any]:
    """Relative Recall@20 gain of family ``focus`` over the best other family, each represented by its point chosen
    on VALIDATION and the best family chosen on VALIDATION too (tuning seed). Per seed both have (an untrained
    model's one run stands for every seed): a paired t-test over the test users; pooled: each user's value averaged
    over those seeds, paired t and Wilcoxon over users; and Welch's t over the seeds' means (two or more seeds
    each)."""
    rows, selected, replicates = block["models"], block["selected"], block["replicates"]
    others = [f for f in selected if f != focus]
    best = max(others, key=lambda f: rows[selected[f]]["valid"][SELECT_ON]["mean"])
    by_seed = lambda family: {rows[n]["seed"]: n for n in replicates[family]}  # noqa: E731
    mine, theirs = by_seed(focus), by_seed(best)
    if len(theirs) == 1 and not _trains(rows[selected[best]]["model"]):  # untrained: the same at every seed
        theirs = dict.fromkeys(mine, next(iter(theirs.values())))
    common = [s for s in mine if s in theirs]
    per_seed, pooled_mine, pooled_best = [], [], []
    for seed in common:
        (users_b, values_b), (users_m, values_m) = (per_user_test_values(folders[theirs[seed]]),
                                                    per_user_test_values(folders[mine[seed]]))
        if not np.array_equal(users_b, users_m):
            raise ValueError(f"{folders[theirs[seed]]} and {folders[mine[seed]]} were tested on different users: "
                             "no paired test")
        test = paired_test(values_b[SELECT_ON], values_m[SELECT_ON])
        base = float(values_b[SELECT_ON].mean())
        per_seed.append({"seed": seed, "diff": test.diff.as_dict(), "t_pvalue": test.t_pvalue,
                         "relative_gain": test.diff.mean / base if base else float("nan")})
        pooled_mine.append(values_m[SELECT_ON])
        pooled_best.append(values_b[SELECT_ON])
    test = paired_test(np.mean(pooled_best, axis=0), np.mean(pooled_mine, axis=0))
    base = float(np.mean(pooled_best))
    out = {"best_baseline": selected[best], "best_family": best, "focus_run": selected[focus], "seeds": common,
           "relative_gain": test.diff.mean / base if base else float("nan"), "diff": test.diff.as_dict(),
           "t_pvalue": test.t_pvalue, "wilcoxon_pvalue": test.wilcoxon_pvalue, "per_seed": per_seed}
    means = lambda names: [rows[n]["test"][SELECT_ON]["mean"] for n in names]  # noqa: E731
    a, b = means(replicates[focus]), means(replicates[best])
    if len(a) >= 2 and len(b) >= 2:
        from scipy import stats as sps

        out["seed_welch_pvalue"] = float(sps.ttest_ind(a, b, equal_var=False).pvalue)
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for dataset, block in results.items():
        s, rows = block["stats"], block["models"]
        missing = block.get("missing", [])
        unfinished = _unfinished_line(missing)
        if not rows:
            lines += [f"### {dataset}", "", unfinished, ""]
            continue
        selected = block.get("selected") or {name: name for name in rows}
        seeded = any(len(v) > 1 for v in block.get("replicates", {}).values())
        n_users = next(iter(rows.values()))["test"][SELECT_ON]["n"]
        spread = ("mean ± SE over the training seeds (n seeds), the per-user SE of one seed beside it"
                  if seeded else f"mean ± SE over {n_users} users")
        lines += [f"### {dataset}", "",
                  f"{s['users']} users, {s['items']} items, train/valid/test {s['train']}/{s['valid']}/{s['test']} "
                  f"interactions ({s['protocol']}). Test, full ranking, train+valid masked, {n_users} users; "
                  f"{spread}.", "",
                  "| model | " + " | ".join((*COLUMNS, *BEYOND_COLUMNS)) + (" | seeds" if seeded else "")
                  + " | best epoch / run (valid), why it stopped | steps to best / run | fit s |",
                  "|---|" + "---|" * (len(COLUMNS) + len(BEYOND_COLUMNS) + 3 + seeded)]
        for family, name in selected.items():
            row = rows[name]
            cells = []
            for c in (*COLUMNS, *BEYOND_COLUMNS):
                est = family_estimate(block, family, c) if "replicates" in block else row["test"].get(c)
                shown = estimate_cell(est) + (f" (u ± {est['user_se']:.4f})" if est and "user_se" in est and
                                              c in COLUMNS else "")
                cells.append(shown)
            label = family if name == family else f"{family} ({name.partition('~')[2]})"
            label += " ‡" if row.get("grid_edges") else ""
            n_seeds = len(block.get("replicates", {}).get(family, [name]))
            steps = f"{row.get('steps_to_best') or '-'} / {row.get('steps_run') or '-'}"
            lines.append(f"| {label} | " + " | ".join(cells) + (f" | {n_seeds}" if seeded else "")
                         + f" | {epochs_summary(row)} | {steps} | {row['fit_seconds']:.0f} |")
        if missing:
            lines += ["", unfinished]
        if "focus" in block:
            f = block["focus"]
            seeds = f" over {len(f['seeds'])} seeds (users' values averaged over seeds)" if len(f.get(
                "seeds", [])) > 1 else ""
            lines += ["", f"Recall@20 vs the best baseline on validation ({f['best_baseline']}){seeds}: "
                          f"{100 * f['relative_gain']:+.1f}% "
                          f"(difference {estimate_cell(f['diff'], signed=True)}, "
                          f"paired t p = {f['t_pvalue']:.2g}, Wilcoxon p = {f['wilcoxon_pvalue']:.2g})"
                      + (f"; Welch's t over the seeds' means p = {f['seed_welch_pvalue']:.2g}"
                         if "seed_welch_pvalue" in f else "")]
            if len(f.get("per_seed", [])) > 1:
                lines += ["", "Per seed: " + "; ".join(
                    f"seed {p['seed']} {100 * p['relative_gain']:+.1f}% (p = {p['t_pvalue']:.2g})"
                    for p in f["per_seed"])]
        tuning = {n: r for n, r in rows.items() if r.get("point", n) == n}
        if len(selected) < len(tuning):
            lines += ["", f"Grid points (validation {SELECT_ON}; the row above is each model's best, ✓):", "",
                      f"| model | point | valid {SELECT_ON} | best epoch / run |", "|---|---|---|---|"]
            for name, row in tuning.items():
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
