"""Train one model on one dataset, select on validation, evaluate on test, and write the run folder.

A run folder holds ``config.json`` (everything needed to rebuild the run: dataset, split, seed, model and
training configs, library versions, data checksum), ``model.pt``, ``log.jsonl`` (one line per epoch) and
``metrics.json`` = ``{"valid": {...}, "test": {"recall@20": {"mean": m, "se": s, "n": n}, ...}}``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmrec.data.interactions import SplitData
from lmrec.data.registry import load_dataset
from lmrec.eval.ranking import TIE_POLICY, evaluate
from lmrec.io import write_json
from lmrec.models.base import Recommender, get_model
from lmrec.models.torch_base import TorchRecommender

REPORT_KS = (10, 20)
REPORT_METRICS = ("recall", "ndcg", "hr", "mrr")


@dataclass
class DataRef:
    """How to load a dataset again: a registry name or a path, with its format, split and seed."""

    dataset: str
    format: str | None = None
    split: str | None = None
    seed: int = 2024

    def load(self) -> SplitData:
        return load_dataset(self.dataset, format=self.format, split=self.split, seed=self.seed)


@dataclass
class RunResult:
    model: Recommender
    metrics: dict[str, dict[str, dict[str, float]]]
    config: dict[str, Any]
    log: Any = None
    out: Path | None = None


def versions() -> dict[str, str]:
    import numpy
    import scipy
    import torch

    from lmrec import __version__

    return {"lmrec": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__, "machine": platform.machine()}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (e.g. 'AMD EPYC'), else ``platform.processor()``."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


def build_model(name: str, model_overrides: dict[str, Any] | None = None) -> Recommender:
    """A registered model with its config fields overridden; unknown fields are an error naming them."""
    cls = get_model(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    overrides = dict(model_overrides or {})
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"model {name!r} has no setting(s) {unknown}; its settings are {sorted(fields)}")
    return cls(**overrides)


def train_and_evaluate(
    model_name: str,
    data_ref: DataRef,
    model_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    out: Path | None = None,
    data: SplitData | None = None,
    ks: tuple[int, ...] = REPORT_KS,
) -> RunResult:
    """Fit ``model_name`` on ``data.train`` (selected on valid), then report valid and test metrics."""
    data = data if data is not None else data_ref.load()
    model = build_model(model_name, model_overrides)
    train_config = None
    log_path = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "log.jsonl"
        log_path.unlink(missing_ok=True)
    start = time.perf_counter()
    if isinstance(model, TorchRecommender):
        train_config = model.resolve_train_config(train_overrides)
        log = model.fit(data, train_config, log_path=log_path)
    else:
        log = model.fit(data)
    fit_seconds = time.perf_counter() - start
    seed = train_config.seed if train_config else data_ref.seed
    ks = tuple(sorted({min(k, data.n_items) for k in ks}))
    metrics = {
        split: evaluate(model.score, data, split, ks=ks, metrics=REPORT_METRICS, seed=seed).to_dict()
        for split in ("valid", "test")
    }
    config = {
        "model": model_name,
        "model_config": dataclasses.asdict(model.config),
        "train_config": None if train_config is None else dataclasses.asdict(train_config),
        "data": dataclasses.asdict(data_ref),
        "data_stats": data.stats(),
        "data_checksum": data.checksum(),
        "evaluation": {"ranking": "full catalog", "valid_masks": ["train"], "test_masks": ["train", "valid"],
                       "ties": TIE_POLICY, "ks": list(ks), "selection": "validation " + (
                           train_config.metric if train_config else "(no training)")},
        "eval_seed": seed,
        "fit_seconds": fit_seconds,
        "best_epoch": getattr(log, "best_epoch", None),
        "versions": versions(),
    }
    if out is not None:
        model.save(out / "model.pt")
        write_json(out / "config.json", config)
        write_json(out / "metrics.json", metrics)
    return RunResult(model, metrics, config, log, out)


def load_run(out: Path) -> tuple[Recommender, SplitData, dict[str, Any]]:
    """Model, dataset and config of a finished run folder."""
    config = json.loads((out / "config.json").read_text())
    data = DataRef(**config["data"]).load()
    model = Recommender.load(out / "model.pt", data)
    return model, data, config
