"""Searching a model's settings on validation: :func:`tune` and ``lmrec tune``.

optuna's TPE sampler (seeded) proposes settings from the model's ``search_space`` (:mod:`lmrec.search_space`); each
trial is a run folder fitted with those settings on the training split and selected on the VALIDATION split, with
the test split left unevaluated; optuna's median pruner stops a trial whose validation curve falls behind the
median of the finished trials at the same epoch (fed through the trainer's ``on_validation``). The first trial is
the model's default settings, so the best trial can always be compared with them. Only when the search is over is
the test split read: for the best trial and the default one.

The output folder::

    tune.json       what was searched (model, data, fixed settings, space, metric, seed): a rerun must match it
    study.db        optuna's study (SQLite; plain tables, parameters and attributes as JSON, nothing pickled)
    trials/<n>/     trial n's run folder; a pruned or failed trial's manifest says "pruned" / "failed" and it does
                    not load (no final model)
    best/           a copy of the best complete trial's run folder, with its test metrics (loads, serves)
    trials.md/.csv  every trial: state, settings, validation metric, best epoch, epochs, seconds; trials.md also
                    the best trial's test metrics against the default settings' run

A killed search rerun with the same arguments goes on: finished trials are kept, a trial that was running is
marked failed and its settings are tried again as a new trial, and ``trials`` counts every finished trial. The
sampler is seeded again from ``seed`` and the number of trials so far, so a resumed search proposes other points
than an unbroken one would (never the same random points twice). One search per folder at a time.

Collaborative-filtering models that train are searched; pop (fitted from counts) and the conversational models are
refused with the reason.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmrec.data.interactions import SplitData
from lmrec.data.registry import DataRef
from lmrec.errors import LmrecError
from lmrec.eval.report import estimate_cell
from lmrec.io import write_json
from lmrec.run import MANIFEST, Run, fit, per_user_test_values
from lmrec.search_space import Space, check_space, defaults
from lmrec.settings import SettingsError, build, field_names
from lmrec.train.trainer import CHECKPOINT_FILE, TrainConfig

if TYPE_CHECKING:
    import pandas

FORMAT, VERSION = "lmrec-tune", 1
SETTINGS_FILE, STUDY_FILE, STUDY_NAME = "tune.json", "study.db", "lmrec-tune"
TRIALS, BEST = "trials", "best"
STARTUP_TRIALS = 5  # TPE's random trials before it models the results (optuna's default is 10: too many here)
COMPARED = ("recall@20", "ndcg@20")  # the test metrics of the best-versus-default line


class Pruned(Exception):
    """Raised from the validation callback when the pruner stops a trial; ends its fit."""

    def __init__(self, epoch: int, score: float):
        super().__init__(f"pruned at epoch {epoch}")
        self.epoch, self.score = epoch, score


@dataclass
class TuneResult:
    """What a search found: the best settings, its run (the ``best/`` folder), every trial, and the line comparing
    the best trial's test metrics with the default settings'."""

    best_params: dict[str, Any]
    best: Run
    trials: pandas.DataFrame
    comparison: str
    folder: Path


def tune(model: str, data: SplitData | str | Path | DataRef, trials: int = 20, *, out: str | Path,
         fixed: Mapping[str, Any] | None = None, space: Space | None = None, timeout: float | None = None,
         seed: int = 2024, pruner: Any = None, log: Callable[[str], None] | None = print) -> TuneResult:
    """Search ``model``'s settings on ``data``'s validation split with ``trials`` trials (the default settings
    first) and write ``out`` (see the module docstring); a folder holding the same search goes on from it.

    ``fixed``: model or training settings every trial takes (e.g. the budget ``{"epochs": 30}``); they leave the
    search. ``space``: replaces the model's ``search_space``. ``timeout``: seconds after which no new trial starts.
    ``seed``: of the sampler and of every trial's training. ``pruner``: an optuna pruner (default: the median
    pruner, from the second finished trial on, after a quarter of the epochs). ``log``: one line per finished trial.
    """
    import optuna

    cls = tunable(model)
    model_fixed, train_fixed = split_fixed(cls, fixed or {})
    space = dict(cls.search_space if space is None else space)
    check_space(cls, space)
    space = {name: values for name, values in space.items() if name not in (fixed or {})}
    if not space:
        raise LmrecError(f"{model}: every setting of the search space is fixed ({', '.join(sorted(fixed or {}))}); "
                         "nothing is left to search")
    if trials < 1:
        raise LmrecError(f"trials={trials}: expected at least 1")
    train = cls.train_config({**train_fixed, "seed": seed})
    ref, dataset = _data(data)
    out = Path(out)
    settings = _settings(model, ref, dataset, {**model_fixed, **train_fixed}, space, train.metric, seed)
    _claim(out, settings)
    say = log or (lambda line: None)

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # lmrec prints its own line per trial
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / STUDY_FILE).resolve()}")
    try:
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=storage, direction="maximize", load_if_exists=True,
            pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=train.epochs // 4))
        start = defaults(cls)
        _recover(study, storage, out, {name: start[name] for name in space}, say)
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=STARTUP_TRIALS)
        left = trials - sum(_counted(t) for t in study.trials)
        if left > 0:
            objective = _Objective(cls, dataset, ref, space, model_fixed, {**train_fixed, "seed": seed}, train, out)

            def finished(study: Any, trial: Any) -> None:
                say(_progress_line(trial, train.metric))
                _write_tables(out, study, space, train.metric, settings)

            study.optimize(objective, n_trials=left, timeout=timeout, callbacks=[finished])
        result = _finish(out, study, dataset, space, train.metric, settings)
    finally:
        optuna.logging.set_verbosity(level)
        storage.engine.dispose()
    say(result.comparison)
    say(f"wrote {out}/ ({BEST}/, trials.md, trials.csv, {STUDY_FILE})")
    return result


# -- checks before anything runs -------------------------------------------------------------------------------
def tunable(name: str) -> type:
    """The CF model class registered as ``name``, if a search can tune it; else an error saying why not."""
    from lmrec.models.base import MODELS

    classes = [cls for _, n, cls in MODELS.entries() if n == name]
    if not classes:
        MODELS.get(name)  # the registry's error names the known models
    cf = [cls for cls in classes if cls.task == "cf"]
    if not cf:
        raise LmrecError(f"{name} is a conversational (CRS) model: lmrec tune searches collaborative-filtering "
                         "models only (their settings on a user-item validation split)")
    cls = cf[0]
    if not cls.trainable:
        raise LmrecError(f"{name} is fitted from the data, not trained: it has no settings to tune")
    if not cls.search_space:
        raise LmrecError(f"{name} declares no search space (search_space beside its Config)")
    return cls


def split_fixed(cls: type, fixed: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model settings, training settings) of ``fixed``, each checked; an unknown key or a bad value is a
    :class:`SettingsError` naming it."""
    own, train_fields = field_names(cls.Config), field_names(TrainConfig)
    unknown = sorted(set(fixed) - set(own) - set(train_fields))
    if unknown:
        raise SettingsError(f"unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: the settings of "
                            f"{cls.name} are {', '.join(own)}; the training settings are {', '.join(train_fields)}")
    if "seed" in fixed:
        raise SettingsError("seed: give the search's seed (seed=..., --seed), which every trial trains with")
    model_fixed = {k: v for k, v in fixed.items() if k in own}
    train_fixed = {k: v for k, v in fixed.items() if k not in own}
    build(cls.Config, model_fixed, what=f"{cls.name} setting")
    cls.train_config(train_fixed)
    return model_fixed, train_fixed


def _data(data: SplitData | str | Path | DataRef) -> tuple[DataRef, SplitData]:
    if isinstance(data, SplitData):
        return DataRef(data.name), data
    ref = data if isinstance(data, DataRef) else DataRef.of(data)
    dataset = ref.load()
    if not isinstance(dataset, SplitData):
        raise LmrecError(f"{ref.dataset}: conversational data; lmrec tune searches collaborative-filtering models")
    return ref, dataset


def _settings(model: str, ref: DataRef, data: SplitData, fixed: dict[str, Any], space: Space, metric: str,
              seed: int) -> dict[str, Any]:
    """What a rerun in the same folder must ask for again (the number of trials and the timeout may change)."""
    described = {name: {"range": type(values).__name__, **dataclasses.asdict(values)} for name, values in space.items()}
    return json.loads(json.dumps({
        "format": FORMAT, "version": VERSION, "model": model, "data": dataclasses.asdict(ref),
        "data_checksum": data.checksum(), "fixed": fixed, "space": described, "metric": metric, "seed": seed,
        "sampler": f"TPE, {STARTUP_TRIALS} random trials first"}))


def _claim(out: Path, settings: dict[str, Any]) -> None:
    """A new or empty ``out`` gets ``tune.json``; one holding the same search is gone on with; anything else is an
    error naming what differs."""
    path = out / SETTINGS_FILE
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("format") != FORMAT or saved.get("version") != VERSION:
            raise LmrecError(f"{path}: not a search of this lmrec ({saved.get('format')} {saved.get('version')})")
        diff = [f"{key}: saved {saved.get(key)!r}, requested {settings.get(key)!r}"
                for key in settings if key != "fixed" and saved.get(key) != settings[key]]
        fixed, wanted = saved.get("fixed", {}), settings["fixed"]
        diff += [f"{key}: saved {fixed.get(key)!r}, requested {wanted.get(key)!r}"
                 for key in sorted(set(fixed) | set(wanted)) if fixed.get(key) != wanted.get(key)]
        if diff:
            raise LmrecError(f"{out}: holds a search with other settings ({'; '.join(diff)}); rerun it with the same "
                             "settings to go on, or choose another --out")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmrecError(f"{out}: exists and is not an empty folder or a search's folder (no {SETTINGS_FILE}); "
                         "choose another --out")
    try:
        write_json(path, settings)
    except OSError as exc:
        raise LmrecError(f"{out}: cannot write the search's folder ({exc.strerror or exc})") from None


# -- the study -------------------------------------------------------------------------------------------------
def _recover(study: Any, storage: Any, out: Path, default: dict[str, Any], say: Callable[[str], None]) -> None:
    """A new study: the default settings are enqueued as its first trial. A study that was killed: each trial left
    running (or interrupted) is marked failed and its settings enqueued again."""
    from optuna.trial import TrialState

    if not study.trials:
        study.enqueue_trial(default, user_attrs={"default": True})
        return
    study_id = storage.get_study_id_from_name(STUDY_NAME)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        mark(out / TRIALS / str(trial.number), "failed")
    retried = {t.user_attrs.get("retry_of") for t in study.trials}
    for trial in study.trials:
        if trial.user_attrs.get("interrupted") and trial.number not in retried:
            params = default if trial.user_attrs.get("default") else trial.params
            study.enqueue_trial(params, user_attrs={"default": bool(trial.user_attrs.get("default")),
                                                    "retry_of": trial.number})
            say(f"trial {trial.number} was interrupted: marked failed; its settings are tried again")


def _counted(trial: Any) -> bool:
    """Whether a trial counts towards ``trials``: finished (complete, pruned, or failed on its own, e.g. a loss that
    diverged), not interrupted."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and not trial.user_attrs.get("interrupted"))


def mark(folder: Path, status: str) -> None:
    """Mark a trial's run folder ``status`` ("pruned" / "failed": it never loads) and drop its checkpoint."""
    path = folder / MANIFEST
    if path.exists():
        manifest = json.loads(path.read_text(encoding="utf-8"))
        write_json(path, {**manifest, "status": status})
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)


class _Objective:
    """One trial: the sampled settings fitted into ``trials/<n>/`` (valid only), its best validation score returned;
    a pruned trial raises optuna's TrialPruned, a diverged one returns NaN (failed). The last epoch of the budget
    is never pruned: nothing would be saved, and the trial is complete."""

    def __init__(self, cls: type, data: SplitData, ref: DataRef, space: Space, model_fixed: dict[str, Any],
                 train_fixed: dict[str, Any], train: TrainConfig, out: Path):
        self.cls, self.data, self.ref, self.space, self.out = cls, data, ref, space, out
        self.metric, self.epochs = train.metric, train.epochs
        self.model_fixed, self.train_fixed = model_fixed, {"progress": False, **train_fixed}
        self.own = set(field_names(cls.Config))

    def __call__(self, trial: Any) -> float:
        import optuna

        params = {name: values.suggest(trial, name) for name, values in self.space.items()}
        settings = {**self.model_fixed, **{k: v for k, v in params.items() if k in self.own}}
        train = {**self.train_fixed, **{k: v for k, v in params.items() if k not in self.own}}
        folder = self.out / TRIALS / str(trial.number)

        def report(epoch: int, metrics: dict[str, float]) -> None:
            trial.report(metrics[self.metric], epoch)
            if epoch < self.epochs and trial.should_prune():
                raise Pruned(epoch, metrics[self.metric])

        try:
            run = fit(self.cls.name, self.data, train, out=folder, overwrite=True, ref=self.ref, test=False,
                label=f"{self.cls.name} trial {trial.number}", on_validation=report, **settings)
        except Pruned as stop:
            mark(folder, "pruned")
            raise optuna.TrialPruned(str(stop)) from None
        except FloatingPointError as exc:  # a loss that diverged: this trial failed, the search goes on
            mark(folder, "failed")
            trial.set_user_attr("error", str(exc))
            return math.nan
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            mark(folder, "failed")
            raise
        return run.log.best_score


# -- reports ---------------------------------------------------------------------------------------------------
def _finish(out: Path, study: Any, data: SplitData, space: Space, metric: str, settings: dict[str, Any]
            ) -> TuneResult:
    """The test split, read at last: the best complete trial and the default settings' trial are evaluated on it,
    the best is copied to ``best/``, and the tables are written with the comparison."""
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        _write_tables(out, study, space, metric, settings)
        states = ", ".join(f"{n} {s}" for s, n in _state_counts(study.trials).items())
        raise LmrecError(f"{out}: no trial of the search completed ({states}); see {out}/trials.md")
    best = max(complete, key=lambda t: (t.value, -t.number))
    default = next((t for t in reversed(complete) if t.user_attrs.get("default")), None)
    runs = {}
    for trial in {best.number: best, **({default.number: default} if default else {})}.values():
        runs[trial.number] = Run.load(out / TRIALS / str(trial.number), data=data)
        runs[trial.number].add_test()
    _copy_run(out / TRIALS / str(best.number), out / BEST)
    comparison = _comparison(out, best, default, runs, data)
    frame = _write_tables(out, study, space, metric, settings, best=best, comparison=comparison)
    return TuneResult(dict(best.params), Run.load(out / BEST, data=data), frame, comparison, out)


def _copy_run(source: Path, target: Path) -> None:
    """``target`` replaced by a copy of the run folder ``source`` (copied beside it first, then renamed)."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)


def _comparison(out: Path, best: Any, default: Any, runs: dict[int, Run], data: SplitData) -> str:
    """One line: the best trial's test metrics against the default settings' (paired t over the test users)."""
    from lmrec.eval.stats import paired_test

    test = runs[best.number].metrics["test"]
    cells = ", ".join(f"{m} {estimate_cell(test[m])}" for m in COMPARED)
    if default is None:
        return f"test (read after the search): best trial {best.number} {cells}; the default settings' trial failed"
    if default.number == best.number:
        return f"test (read after the search): the default settings (trial {best.number}) were best: {cells}"
    base = runs[default.number].metrics["test"]
    _, best_values = per_user_test_values(out / TRIALS / str(best.number), data)
    _, base_values = per_user_test_values(out / TRIALS / str(default.number), data)
    parts = []
    for m in COMPARED:
        change = test[m]["mean"] / base[m]["mean"] - 1 if base[m]["mean"] else math.nan
        p = paired_test(base_values[m], best_values[m]).t_pvalue
        parts.append(f"{m} {estimate_cell(test[m])} vs {estimate_cell(base[m])} ({change:+.1%}, paired t p = {p:.2g})")
    return (f"test (read after the search), best trial {best.number} vs the default settings (trial "
            f"{default.number}): " + "; ".join(parts))


def _state_counts(trials: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[_state(t)] = counts.get(_state(t), 0) + 1
    return counts


def _state(trial: Any) -> str:
    return {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
            "WAITING": "waiting"}[trial.state.name]


def _row(trial: Any, names: list[str], metric: str, retries: dict[int, int]) -> dict[str, Any]:
    """A trial as a table row: number, state, settings, best validation score and its epoch, epochs, seconds."""
    steps = trial.intermediate_values
    best_epoch = max(steps, key=lambda e: (steps[e], -e)) if steps else None
    note = "default settings" if trial.user_attrs.get("default") else ""
    interrupted = trial.user_attrs.get("interrupted")  # its end is when a rerun found it: no duration
    if interrupted:
        note = "; ".join(filter(None, [note, "interrupted" + (f", tried again as trial {retries[trial.number]}"
                                                              if trial.number in retries else "")]))
    if trial.user_attrs.get("error"):
        note = "; ".join(filter(None, [note, trial.user_attrs["error"]]))
    return {"trial": trial.number, "state": _state(trial), **{name: trial.params.get(name) for name in names},
            f"valid {metric}": steps[best_epoch] if steps else None, "best epoch": best_epoch,
            "epochs": max(steps) if steps else None,
            "seconds": trial.duration.total_seconds() if trial.duration and not interrupted else None, "note": note}


def _write_tables(out: Path, study: Any, space: Space, metric: str, settings: dict[str, Any], best: Any = None,
                  comparison: str | None = None) -> pandas.DataFrame:
    """``trials.csv`` and ``trials.md`` (with the best trial and the comparison once the search is over)."""
    import pandas

    from lmrec.io import atomic_write

    retries = {t.user_attrs["retry_of"]: t.number for t in study.trials if "retry_of" in t.user_attrs}
    rows = [_row(t, list(space), metric, retries) for t in study.trials]
    columns = ["trial", "state", *space, f"valid {metric}", "best epoch", "epochs", "seconds", "note"]

    def write_csv(f: Any) -> None:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)

    atomic_write(out / "trials.csv", write_csv)
    fixed = ", ".join(f"{k}={v}" for k, v in settings["fixed"].items()) or "nothing"
    counts = ", ".join(f"{n} {s}" for s, n in _state_counts(study.trials).items())
    lines = [f"# lmrec tune {settings['model']} on {Path(settings['data']['dataset']).name}", "",
             f"Selection on validation {metric}; the test split is read only after the search, for the best trial "
             f"and the default settings. TPE sampler (seed {settings['seed']}), median pruner. {len(rows)} trials: "
             f"{counts}.", "",
             "Search space: " + ", ".join(f"{name} {values}" for name, values in space.items()) + f". Fixed: {fixed}.",
             "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        seconds = row["seconds"] and round(row["seconds"], 1)
        lines.append("| " + " | ".join(_md_cell({**row, "seconds": seconds}[c]) for c in columns) + " |")
    if best is not None:
        chosen = ", ".join(f"{k}={_md_cell(v)}" for k, v in best.params.items())
        lines += ["", f"Best on validation: trial {best.number} ({chosen}), valid {metric} {best.value:.4f}; "
                      f"its run folder is {BEST}/.", "", f"{comparison}."]
    atomic_write(out / "trials.md", lambda f: f.write("\n".join(lines) + "\n"))
    return pandas.DataFrame(rows, columns=columns)


def _md_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if not value.is_integer() or abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _progress_line(trial: Any, metric: str) -> str:
    """``trial 3: lr=0.00123, reg=2.1e-05 · valid recall@20 0.2451 (best epoch 25 of 30) · complete · 48.2 s``."""
    row = _row(trial, list(trial.params), metric, {})
    params = ", ".join(f"{k}={_md_cell(v)}" for k, v in trial.params.items())
    label = f"trial {trial.number}" + (" (default settings)" if trial.user_attrs.get("default") else "")
    score = row[f"valid {metric}"]
    result = "no validation" if score is None else (
        f"valid {metric} {score:.4f} (best epoch {row['best epoch']} of {row['epochs']})")
    state = {"pruned": f"pruned at epoch {row['epochs']}",
             "failed": f"failed: {trial.user_attrs.get('error', 'interrupted')}"}.get(row["state"], row["state"])
    return f"{label}: {params} · {result} · {state} · {row['seconds'] or 0:.1f} s"
