"""One trainer for every gradient-trained model: epochs, validation-only model selection, early stopping."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from lmrec.data.interactions import SplitData
from lmrec.eval.ranking import evaluate


@dataclass
class TrainConfig:
    """Training loop settings. Models override the defaults with their paper's values (``train_defaults``).

    Selection: every ``eval_every`` epochs the model is ranked on the VALIDATION split; the state with the
    best ``metric`` is kept and restored at the end; training stops after ``patience`` evaluations
    without improvement. The test split is never looked at here.
    """

    epochs: int = 500
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 4096
    eval_every: int = 5
    patience: int = 20
    metric: str = "recall@20"
    seed: int = 2024
    eval_batch_size: int = 1024
    max_minutes: float | None = None
    progress: bool = True
    optimizer: str = "adam"  # "adam" | "adamw"
    grad_clip: float | None = None  # max global gradient norm

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every", "patience", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"training setting {name} must be >= 1, got {getattr(self, name)!r}")
        if self.lr < 0 or self.weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        _parse_metric(self.metric)
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")

    @classmethod
    def with_overrides(cls, defaults: dict[str, Any], overrides: dict[str, Any] | None) -> TrainConfig:
        """Defaults updated with overrides; an unknown setting is an error that names it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides or {}) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; the settings are {sorted(known)}")
        return cls(**{**defaults, **(overrides or {})})


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    seconds: float  # training seconds of this epoch (evaluation excluded)
    valid: dict[str, float] | None = None


@dataclass
class TrainLog:
    records: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    seconds_to_best: float = 0.0  # training + validation seconds until the best epoch was reached
    total_seconds: float = 0.0
    stopped: str = "max epochs"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TorchTrainable(Protocol):
    """What the trainer needs from a model: parameters, one epoch of batches, a loss, a scorer, its state."""

    name: str

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[Any]: ...

    def loss(self, batch: Any) -> torch.Tensor: ...

    def score(self, users: np.ndarray) -> torch.Tensor: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def set_training(self, training: bool) -> None:
        """Switch train/eval mode and drop cached inference embeddings."""


Validate = Callable[[], dict[str, float]]  # metrics of the current state on VALIDATION data


class Trainer:
    """The training loop shared by every gradient-trained model of lmrec (CF, CRS, RTA, zero-shot)."""

    def __init__(self, config: TrainConfig | None = None, log_path: Path | None = None):
        self.config = config or TrainConfig()
        self.log_path = log_path

    def fit(self, model: TorchTrainable, data: SplitData) -> TrainLog:
        """Train a CF model, validating by full ranking of ``data.valid`` (train items masked)."""
        cfg = self.config
        metric_name, k = _parse_metric(cfg.metric)

        def validate() -> dict[str, float]:
            result = evaluate(model.score, data, "valid", ks=sorted({k, min(20, data.n_items)}),
                              batch_size=cfg.eval_batch_size, seed=cfg.seed,
                              metrics=tuple(dict.fromkeys((metric_name, "recall", "ndcg", "hr"))))
            return {name: est.mean for name, est in result.summary().items()}

        return self.run(model, validate)

    def run(self, model: TorchTrainable, validate: Validate | None) -> TrainLog:
        """Epochs of ``model.batches`` with ``cfg.optimizer``; every ``eval_every`` epochs ``validate()`` must
        return ``cfg.metric``; the best state is kept and restored. Without ``validate`` the last state is kept."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
        optimizer = optimizer_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        log = TrainLog()
        best_state: dict[str, Any] | None = None
        bad_evals = 0
        start = time.perf_counter()
        epochs = tqdm(range(1, cfg.epochs + 1), desc=f"train {getattr(model, 'name', '')}", disable=not cfg.progress)
        for epoch in epochs:
            t0 = time.perf_counter()
            model.set_training(True)
            total, n_batches = 0.0, 0
            for batch in model.batches(rng, cfg.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = model.loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}; lower the learning rate")
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                total += loss.item()
                n_batches += 1
            model.set_training(False)
            record = EpochRecord(epoch, total / max(n_batches, 1), time.perf_counter() - t0)
            out_of_time = cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes
            last = epoch == cfg.epochs or out_of_time
            if validate is not None and (epoch % cfg.eval_every == 0 or last):
                record.valid = validate()
                score = record.valid[cfg.metric]
                if score > log.best_score:
                    log.best_score, log.best_epoch = score, epoch
                    log.seconds_to_best = time.perf_counter() - start
                    best_state = copy.deepcopy(model.state())
                    bad_evals = 0
                else:
                    bad_evals += 1
                epochs.set_postfix(loss=f"{record.loss:.4f}", **{cfg.metric: f"{score:.4f}"},
                                   best=f"{log.best_score:.4f}@{log.best_epoch}")
            log.records.append(record)
            self._write(record)
            if bad_evals >= cfg.patience:
                log.stopped = f"early stop: no validation improvement in {cfg.patience} evaluations"
                break
            if last and epoch != cfg.epochs:
                log.stopped = f"time budget of {cfg.max_minutes} minutes"
                break
        log.total_seconds = time.perf_counter() - start
        if best_state is not None:
            model.load_state(best_state)
        model.set_training(False)
        return log

    def _write(self, record: EpochRecord) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(record)) + "\n")


def _parse_metric(metric: str) -> tuple[str, int]:
    name, _, k = metric.partition("@")
    if not k.isdigit():
        raise ValueError(f"selection metric {metric!r} must look like 'recall@20'")
    return name, int(k)
