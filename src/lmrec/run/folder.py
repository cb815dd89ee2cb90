"""The run-folder format, one for every model: what a folder holds, reading its manifest, claiming a folder for a
run, and whether a saved run was made with the settings asked for (what lets a run, a record or an experiment step
be reused).


    manifest.json            format / version, status ("training" until the run is complete), task and model name,
                             model settings, training settings, the data reference and checksum, LLM settings and the
                             prepared-features folder (CRS; a path relative to the run folder), fit summary, versions
    model.safetensors        the learned state ("state.*") and saved inputs ("artifacts.*", e.g. LM item features)
    metrics.json             {"valid": {...}, "test": {...}}: mean / SE / n per metric
    per-user.safetensors     CF runs: the test values per user ("users": dense user indices, "<metric>": values in
                             that order), what paired tests compare without loading the model
    log.jsonl                one line per epoch (trained models)
    checkpoint.safetensors   the resumable training state while training (removed when the run completes)
    data/                    what the run needs to answer, its data's snapshot (lmrec.data.snapshot)
    added-items.safetensors  items added by title through ``lmrec serve`` (AlphaRec runs; see lmrec.serve.service)

Nothing is pickled: tensors are safetensors, everything else JSON, so opening a run folder received from someone
else runs no code. Paths inside are relative to the folder, so a run folder copied elsewhere loads.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.eval.ranking import RankingResult
from lmrec.io import write_json
from lmrec.models.base import get_model
from lmrec.settings import as_dict
from lmrec.tensorfile import load_tensors, save_tensors, tensor_dict
from lmrec.train.trainer import (
    RESUME_MAY_CHANGE,
    with_legacy,
)

FORMAT, VERSION = "lmrec-run", 1
MANIFEST, WEIGHTS, METRICS, PER_USER = "manifest.json", "model.safetensors", "metrics.json", "per-user.safetensors"
EVALUATION_NOTES = ("not_evaluated", "excluded_cold_users")  # what evaluating added to the manifest's protocol
# manifest statuses of a search's trials that ended before training did (lmrec.tuning), and what happened
TRIAL_ENDS = {"pruned": "was pruned (its validation curve fell behind the other trials')",
              "failed": "failed or was interrupted"}


def per_user_test_values(folder: Path, data: SplitData | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(dense user indices, {metric: value per user}) of a complete CF run folder's test evaluation, from its
    ``per-user.safetensors`` (``data``: the run's data, when it cannot be loaded from the manifest)."""
    folder = Path(folder)
    if not (folder / PER_USER).exists():  # a folder written before the values per user were kept: they are added
        from lmrec.run.run import Run

        _write_per_user(folder, Run.load(folder, data=data).evaluate("test"))
    tensors, _ = load_tensors(folder / PER_USER)
    return tensors.pop("users").numpy(), {name: t.numpy() for name, t in tensors.items()}


def read_metrics(folder: Path) -> dict[str, Any]:
    """The metrics.json of a complete run folder (or record)."""
    return _read_json(Path(folder) / METRICS)


def _write_per_user(folder: Path, result: RankingResult) -> None:
    """int32 user indices and float32 values (what a paired test needs; half the size of int64 / float64)."""
    values = {name: v.astype(np.float32) for name, v in result.per_user.items()}
    save_tensors(folder / PER_USER, {"users": torch.from_numpy(result.users.astype(np.int32)), **tensor_dict(values)},
                 {"split": result.split})


# -- the folder ------------------------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a run folder; a clear error for a folder that is not one, an old or a foreign one."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise LmrecError(f"{folder}: no such run folder")
    if not path.exists():
        old = " (an old lmrec run folder: config.json + model.pt; train it again)" if (
            Path(folder) / "model.pt").exists() else ""
        raise LmrecError(f"{folder}: not an lmrec run folder (no {MANIFEST}){old}")
    manifest = _read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LmrecError(f"{path}: not an lmrec run manifest (format {manifest.get('format')!r})"
                         if isinstance(manifest, dict) else f"{path}: not an lmrec run manifest")
    if manifest.get("version") != VERSION:
        raise LmrecError(f"{path}: run-folder version {manifest.get('version')!r}; this lmrec reads version {VERSION}")
    return manifest


def claim_folder(folder: Path, overwrite: bool = False, resume: bool = False,
                 manifest: dict[str, Any] | None = None) -> bool:
    """Make ``folder`` ready for a run: a new or empty folder is used; an existing run is replaced only with
    ``overwrite`` and continued only with ``resume`` (same model, settings and data); any other non-empty
    folder is refused, so nothing is silently replaced or mixed. Writes the "training" manifest. True when
    ``resume`` finds the run complete already (with the same settings)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise LmrecError(f"{folder}: exists and is not a folder")
    existing = folder.is_dir() and any(folder.iterdir())
    if existing:
        saved = read_manifest(folder) if (folder / MANIFEST).exists() else None
        if resume and saved is not None:
            _check_same_run(folder, saved, manifest)
            return saved.get("status") == "complete"
        if overwrite and saved is not None:
            shutil.rmtree(folder)
        elif saved is None:
            raise LmrecError(f"{folder}: exists, is not empty and is not an lmrec run folder; choose another --out")
        else:
            raise LmrecError(f"{folder}: holds a run already; pass --overwrite to replace it"
                             + (" or --resume to continue it" if saved.get("status") != "complete" else ""))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if manifest is not None:
            write_json(folder / MANIFEST, {k: v for k, v in manifest.items() if k != "features_abs"})
    except OSError as exc:
        raise LmrecError(f"{folder}: cannot write the run folder ({exc.strerror or exc})") from None
    return False


def differences(saved: Mapping[str, Any], wanted: Mapping[str, Any], keys: Sequence[str] | None = None) -> list[str]:
    """The keys (``keys``, default every key of either, sorted) whose values differ between ``saved`` and ``wanted``:
    the one test of "made with the settings asked for" behind reusing a run folder or a record
    (:func:`settings_differ`) and an experiment step (:func:`lmrec.experiments.steps.cached_step`)."""
    keys = list(keys) if keys is not None else sorted(set(saved) | set(wanted))
    return [k for k in keys if saved.get(k) != wanted.get(k)]


def settings_differ(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The manifest keys in which run ``saved`` was made with other settings than ``wanted`` asks for (model, task,
    data checksum, evaluation seed and protocol, model and training settings; settings added since a run was saved
    compare as what it did: :func:`_with_defaults`, :func:`lmrec.train.trainer.with_legacy`); an unfinished run may
    change what resuming allows."""
    ignore = RESUME_MAY_CHANGE if saved.get("status") != "complete" else ("progress", "device")

    def compared(manifest: Mapping[str, Any]) -> dict[str, Any]:
        train = manifest.get("train_config")
        return {**{k: manifest.get(k) for k in ("model", "task", "data_checksum", "eval_seed")},
                "model_config": _with_defaults(manifest),
                "evaluation": {k: v for k, v in (manifest.get("evaluation") or {}).items()
                               if k not in EVALUATION_NOTES},
                "train_config": None if train is None else {k: v for k, v in with_legacy(train).items()
                                                            if k not in ignore}}

    return differences(compared(saved), compared(wanted), ("model", "task", "data_checksum", "eval_seed",
                                                           "model_config", "evaluation", "train_config"))


def _with_defaults(manifest: Mapping[str, Any]) -> Any:
    """The manifest's model settings with those its model gained since (absent from an older manifest) at their
    defaults: a setting is added with the default that keeps the earlier behaviour."""
    config = manifest.get("model_config")
    try:
        defaults = as_dict(get_model(manifest["model"], manifest["task"]).Config())
    except (LmrecError, KeyError):
        return config
    return {**defaults, **config} if isinstance(config, dict) else config


def _check_same_run(folder: Path, saved: dict[str, Any], wanted: dict[str, Any] | None) -> None:
    if wanted is None:
        return
    diff = settings_differ(saved, wanted)
    if diff:
        detail = "; ".join(f"{k}: saved {saved.get(k)!r}, requested {wanted.get(k)!r}" for k in diff)
        raise LmrecError(f"{folder}: holds a run made with other settings ({detail}); resume it with the same "
                         "settings, or start again with --overwrite (or another folder)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LmrecError(f"{path}: not valid JSON ({exc})") from None
