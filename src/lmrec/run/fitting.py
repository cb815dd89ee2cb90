"""Fitting a model into a run (:func:`fit`): the settings checked before any data is read, the data loaded, the
run folder claimed (or an interrupted run resumed), the model fitted with its inputs, evaluated on valid and test,
and the folder written."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lmrec import clock
from lmrec.data.conversations import CRSData
from lmrec.data.interactions import SplitData
from lmrec.data.registry import DataRef
from lmrec.environment import versions
from lmrec.errors import LmrecError
from lmrec.eval.model import CRS_KS, REPORT_KS, test_metrics
from lmrec.eval.ranking import TIE_POLICY, NothingToEvaluate, RankingResult
from lmrec.inputs import ModelInputs
from lmrec.models.base import Model, get_model
from lmrec.progress import progress_bars
from lmrec.run.folder import FORMAT, VERSION, claim_folder
from lmrec.run.run import Run, _make
from lmrec.settings import as_dict, build
from lmrec.train import OnValidation, distributed
from lmrec.train.trainer import (
    RUN_SETTINGS,
    TrainConfig,
    TrainLog,
    resolve_device,
)


def fit(
    model: str | Model,
    data: Any,
    train: TrainConfig | dict[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    features: Any = None,
    base: Run | Model | None = None,
    ref: DataRef | None = None,
    label: str | None = None,
    test: bool = True,
    on_validation: OnValidation | None = None,
    **settings: Any,
) -> Run:
    """Fit a model (a registered name with its ``settings``, or a model object) on ``data`` (a dataset, a registered
    name or path, a :class:`DataRef`, an imported :class:`lmrec.Dataset`, or a pandas / pyarrow table of
    interactions) with ``train`` (a :class:`TrainConfig` or overrides of the model's paper
    values), evaluate it on valid and test, and return the :class:`Run`; with ``out`` the run folder is written
    (checkpoints included, so an interrupted run continues with ``resume=True``; a complete run with the same
    settings is then loaded instead of trained again, and one with other settings is an error).

    CRS models: ``features`` is a prepared folder (``lmrec crs prepare``) or :class:`LLMFeatures` for the models
    that use the LLM (and restricts training to its prepared turns); ``base`` the reindex run ``rta_adapt`` adapts.
    ``ref`` records how to load an in-memory ``data`` again (default: its name). ``label``: a display name kept in
    the manifest (e.g. a comparison's ``alpharec~tau=0.2``; the folder's name may differ).
    ``test=False`` leaves the test split unevaluated (a search that selects on validation; :meth:`Run.add_test`
    evaluates it later). ``on_validation(epoch, metrics)`` (CF models): called after each validation of training
    (:meth:`lmrec.train.Trainer.run`); what it raises stops the fit.
    """
    model, dataset, task, train_config, features, manifest = _plan(model, data, train, features, ref, settings)
    if label is not None:
        manifest["label"] = label
    folder = Path(out) if out is not None else None
    if folder is not None and _claim_once(folder, overwrite, resume, manifest):
        return Run.load(folder, data=dataset)  # complete already, with these settings
    start = clock.now()
    inputs = model.check_inputs(ModelInputs(features=features, base=base.model if isinstance(base, Run) else base))
    show = train_config.progress if train_config is not None else run_settings(train).get("progress", True)
    with progress_bars(show):  # the bars of the libraries it calls, e.g. transformers loading an encoder
        log = model.fit(dataset, train_config, inputs=inputs, folder=folder, resume=resume,
                        on_validation=on_validation)
        manifest["fit"] = _fit_summary(log, clock.now() - start)
        if hasattr(model, "diagnostics"):
            manifest["fit"]["learned"] = model.diagnostics()
        run = Run(model, dataset, manifest, log=log)
        run.metrics, run.test_result = _evaluate_splits(run, ("valid", "test") if test else ("valid",))
    if folder is not None and distributed.current().is_main:
        run._write(folder)
    return run


def run_settings(train: TrainConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings about the run itself (:data:`~lmrec.train.trainer.RUN_SETTINGS`: seed, progress, device) that
    ``train`` gives, validated: all of a :class:`TrainConfig`'s, a dict's keys among them."""
    if isinstance(train, TrainConfig):
        return {key: getattr(train, key) for key in RUN_SETTINGS}
    given = {key: value for key, value in (train or {}).items() if key in RUN_SETTINGS}
    return {key: getattr(build(TrainConfig, given, what="training setting"), key) for key in given}


def planned_manifest(model: str, data: SplitData | CRSData | str | DataRef, train: dict[str, Any] | None = None,
                     *, ref: DataRef | None = None, **settings: Any) -> tuple[dict[str, Any], SplitData | CRSData]:
    """The manifest :func:`fit` would write for these arguments, and the data it would load, without training (what
    a finished run's record is matched against)."""
    _, dataset, _, _, _, manifest = _plan(model, data, train, None, ref, settings)
    return manifest, dataset


def _plan(model: str | Model, data: SplitData | CRSData | str | DataRef, train: TrainConfig | dict[str, Any] | None,
          features: Any, ref: DataRef | None, settings: dict[str, Any]) -> tuple[Any, ...]:
    """Validate :func:`fit`'s arguments and load what it needs: (model, data, task, training config, features,
    manifest)."""
    data = _as_data(data)
    if isinstance(data, (str, Path, DataRef)):
        ref, dataset = data if isinstance(data, DataRef) else DataRef.of(data), None
        task = task_of(ref)
    else:
        ref, dataset = ref or DataRef(data.name), data
        task = "crs" if isinstance(data, CRSData) else "cf"
    if isinstance(model, str):  # settings are validated before any data is read
        model = _make(get_model(model, task), settings)
    elif settings:
        raise LmrecError("settings go with a model name; a model object carries its own config")
    if model.task != task:
        raise LmrecError(f"{model.name} is a {model.task} model, but {ref.dataset!r} is {task} data")
    # a model fitted from the data (pop, dense, zero_shot_llm) has no training loop: of ``train`` only the settings
    # about the run apply to it (seed, progress, device); the others are left aside (a comparison passes the same
    # training settings to every model; the CLI refuses them for such a model)
    train_config = model.train_config(train, model.config) if model.trainable else None
    run = run_settings(train_config if model.trainable else train)
    if not model.trainable:  # a trained model moves to the training device when it is fitted
        model.device = resolve_device(run.get("device", "cpu"))
    if dataset is None:
        dataset = ref.load()
    if isinstance(dataset, SplitData) and dataset.train.nnz == 0:
        raise LmrecError(f"{dataset.name}: the training split is empty: nothing to fit")
    features = _features(features, dataset)
    manifest = _manifest(model, dataset, ref, train_config, features, run.get("seed", ref.seed))
    if train_config is not None:  # what it runs in, what "auto" picks here, and why
        manifest["precision"] = train_config.precision_choice(model.bf16_path, model.name).as_dict()
    return model, dataset, task, train_config, features, manifest


def _as_data(data: Any) -> Any:
    """An imported :class:`~lmrec.data.frames.Dataset` as its split, a data frame or pyarrow table of interactions
    through :meth:`Dataset.from_frames` (columns found by name); anything else unchanged."""
    from lmrec.data.frames import Dataset

    if isinstance(data, Dataset):
        return data.to_split()
    if hasattr(data, "columns") or hasattr(data, "to_pandas"):  # pandas or pyarrow
        return Dataset.from_frames(data).to_split()
    return data


def _claim_once(folder: Path, overwrite: bool, resume: bool, manifest: dict[str, Any]) -> bool:
    """:func:`claim_folder` in the main process only; in data-parallel training the other processes learn its
    outcome (complete already / go on / failed) before anyone reads a checkpoint from the folder."""
    world = distributed.current()
    if not world.active:
        return claim_folder(folder, overwrite=overwrite, resume=resume, manifest=manifest)
    outcome, error = 2, None  # 2: failed
    if world.is_main:
        try:
            outcome = int(claim_folder(folder, overwrite=overwrite, resume=resume, manifest=manifest))
        except Exception as exc:  # noqa: BLE001 -- the other ranks must hear of any failure, then it is raised
            error = exc
    outcome = world.from_main(outcome)
    if error is not None:
        raise error
    if outcome == 2:
        raise LmrecError(f"{folder}: the main process could not claim the run folder (its error is in its output)")
    return bool(outcome)


def task_of(ref: DataRef) -> str:
    """"crs" for conversational data, else "cf", from the registry or the folder's files (nothing is loaded)."""
    from lmrec.data.registry import CRS_FORMATS, detect_format, get_spec, is_registered

    if ref.format is not None:
        return "crs" if ref.format in CRS_FORMATS else "cf"
    if is_registered(ref.dataset):
        return get_spec(ref.dataset).task
    folder = Path(ref.dataset).expanduser()
    return "crs" if folder.is_dir() and detect_format(folder) in CRS_FORMATS else "cf"


def _features(features: Any, data: SplitData | CRSData) -> Any:
    """A prepared LLM folder (a path) opened for ``data``; an opened one (or None) as it is."""
    if features is None or not isinstance(features, (str, Path)):
        return features
    from lmrec.inputs.store import load_features

    return load_features(Path(features), data)


def _manifest(model: Model, data: SplitData | CRSData, ref: DataRef, train: TrainConfig | None,
              features: Any, eval_seed: int) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "status": "training", "task": model.task, "model": model.name,
        "model_config": as_dict(model.config), "train_config": None if train is None else as_dict(train),
        "data": asdict(ref), "data_checksum": data.checksum(), "data_stats": _data_stats(data),
        "eval_seed": eval_seed,
        "evaluation": _evaluation_protocol(data),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(),
    }
    if features is not None:
        manifest["llm"] = features.meta["config"]
        manifest["features_abs"] = str(features.folder.resolve())
    return manifest


def _data_stats(data: SplitData | CRSData) -> dict[str, Any]:
    if isinstance(data, SplitData):
        return data.stats()
    return {"name": data.name, "items": len(data.catalog), **{f"{s}_conversations": len(data.split(s))
                                                              for s in ("train", "valid", "test")}}


def _evaluation_protocol(data: SplitData | CRSData) -> dict[str, Any]:
    if isinstance(data, SplitData):
        return {"ranking": "full catalog", "valid_masks": ["train"], "test_masks": ["train", "valid"],
                "ties": TIE_POLICY, "ks": list(REPORT_KS)}
    return {"ranking": "full catalog", "ties": "expected under random tie-breaking", "pairs": "one per (turn, target)",
            "ks": list(CRS_KS), "test_new": "new targets only, mentioned items removed from the ranking"}


def _fit_summary(log: TrainLog | None, seconds: float) -> dict[str, Any]:
    """``seconds``: the fit's wall time in this process, plus, for a resumed run, the seconds spent before;
    ``threads``: torch's CPU threads in the process that finished the fit (seconds compare only at equal threads;
    one and two threads train to the same bits where checked, bench/results/jobs-threads.md)."""
    import torch  # loaded by the fit already; not at the module's import

    if log is None:
        return {"seconds": seconds, "trained": False}
    seconds += log.seconds_before_resume
    best = [r.steps for r in log.records if r.epoch <= log.best_epoch]
    return {"seconds": seconds, "threads": torch.get_num_threads(), "trained": True, "best_epoch": log.best_epoch,
            "epochs_run": len(log.records),
            "steps_run": sum(r.steps for r in log.records), "steps_to_best": sum(best),
            "stopped": log.stopped, "converged": log.converged, "resumed_at": log.resumed_at}


def _evaluate_splits(run: Run, splits: Sequence[str] = ("valid", "test")) -> tuple[dict[str, Any],
                                                                               RankingResult | None]:
    """The metrics.json blocks of ``splits``, and the test evaluation per user (CF); what was not evaluated,
    and why, goes into the manifest (a split left out on purpose too)."""
    metrics: dict[str, Any] = {}
    per_user = None
    notes = run.manifest["evaluation"]
    for split in ("valid", "test"):
        if split not in splits:
            notes.setdefault("not_evaluated", {})[split] = "left out when fitted (a search selecting on validation)"
            continue
        try:
            result = run.evaluate(split, metrics=test_metrics(run.data) if split == "test" else None)
        except NothingToEvaluate as exc:
            notes.setdefault("not_evaluated", {})[split] = str(exc)
            continue
        if isinstance(result, RankingResult):
            metrics[split] = result.to_dict()
            per_user = result if split == "test" else per_user
            if result.protocol.get("excluded_cold_users"):
                notes.setdefault("excluded_cold_users", {})[split] = result.protocol["excluded_cold_users"]
        else:
            metrics[split] = {name: r.to_dict() for name, r in result.items()}
    return metrics, per_user
