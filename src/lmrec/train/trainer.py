"""One trainer for every gradient-trained model: epochs, validation-only model selection, early stopping,
atomic checkpoints and resumption."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from lmrec import clock, tensorfile
from lmrec.errors import Argument, ArgumentError, LmrecError
from lmrec.settings import as_dict, build, settings
from lmrec.train import checkpoint as ckpt
from lmrec.train import distributed
from lmrec.train.determinism import deterministic_kernels
from lmrec.train.precision import Precision, PrecisionChoice, choose

Device = Literal["cpu", "cuda", "mps"]
LOG_FILE = "log.jsonl"  # one JSON line per epoch, in a run folder
RESUME_MAY_CHANGE = ("epochs", "progress", "device")  # settings a resumed run may change (more epochs: go on)
# settings about the run itself, not its training: a model that does not train (pop, dense, zero_shot_llm) takes them
# too (the seed of its evaluation's tie-breaking, its progress bars, where it computes)
RUN_SETTINGS = ("seed", "progress", "device")
CHECKPOINT_FILE = "checkpoint.safetensors"  # the resumable training state, in a run folder
METRIC_PATTERN = r"^(recall|ndcg|hr|mrr|precision)@[1-9][0-9]*$"
# the training settings that change what a model learns from its random streams (see TrainConfig.stream_seed);
# not ``precision``: the same seed draws the same batches and initial state in fp32 and bf16, so two such runs
# differ by precision only (and "auto", which resolves by machine, cannot move a run's streams)
STREAM_SETTINGS = ("lr", "weight_decay", "batch_size", "optimizer", "grad_clip", "steps_per_epoch")
# what runs made before a setting existed did, for settings added later (a saved config without the key means this)
LEGACY_VALUES: dict[str, Any] = {"streams": "shared", "steps_per_epoch": None, "precision": "fp32"}


@settings
class TrainConfig:
    """Training loop settings, one set for every model (CF, CRS, reindex, adapt); each model states its paper's
    values in ``train_defaults``, which the user's settings override.

    Selection: every ``eval_every`` epochs the model is ranked on the VALIDATION split; the state with the best
    ``metric`` is kept and restored at the end; training stops after ``patience`` evaluations without
    improvement. The test split is never looked at here. Every ``checkpoint_every`` epochs (and at the end) the
    whole training state is written atomically when the run has a folder, so a killed run resumes exactly.
    """

    epochs: Annotated[int, Field(ge=1, description="maximum number of epochs")] = 500
    lr: Annotated[float, Field(ge=0, description="learning rate")] = 1e-3
    weight_decay: Annotated[float, Field(ge=0, description="optimizer weight decay")] = 0.0
    batch_size: Annotated[int, Field(ge=1, description="training batch size")] = 4096
    eval_every: Annotated[int, Field(ge=1, description="validate every N epochs")] = 5
    patience: Annotated[int, Field(ge=1, description="stop after N validations without improvement")] = 20
    metric: Annotated[str, Field(pattern=METRIC_PATTERN, description="selection metric on validation")] = "recall@20"
    seed: Annotated[int, Field(description="seed of sampling, initialisation and tie-breaking")] = 2024
    eval_batch_size: Annotated[int, Field(ge=1, description="users (turns) ranked per batch")] = 1024
    max_minutes: Annotated[float | None, Field(gt=0, description="stop after this many minutes")] = None
    progress: Annotated[bool, Field(description="show a progress bar")] = True
    optimizer: Annotated[Literal["adam", "adamw"], Field(description="optimizer")] = "adam"
    grad_clip: Annotated[float | None, Field(gt=0, description="max global gradient norm")] = None
    device: Annotated[Device, Field(description="where tensors live: cpu, cuda or mps")] = "cpu"
    checkpoint_every: Annotated[int, Field(ge=1, description="write a resumable checkpoint every N epochs")] = 5
    streams: Annotated[Literal["model", "shared"], Field(
        description="random streams of sampling and initialisation: 'model' derives them from the seed and the "
        "model's settings (each model and grid point its own), 'shared' from the seed alone (every model the same "
        "draws)")] = "model"
    steps_per_epoch: Annotated[int | None, Field(
        ge=1, description="an epoch is this many optimizer steps instead of one pass over the training data, so "
        "epochs, eval_every and patience count the same steps on data of any size")] = None
    precision: Annotated[Precision, Field(
        description="float type of the dense products over LM vectors (AlphaRec's MLP, KAR / RLMRec projections): "
        "'auto' takes bf16 where it is fast (CUDA with bf16, a CPU with AMX, an AMD CPU with AVX512-BF16) and fp32 "
        "elsewhere; losses, sums and optimizer state stay fp32. A model's training config holds the choice, never "
        "'auto'")] = "auto"

    @classmethod
    def with_overrides(cls, defaults: dict[str, Any] | None, overrides: TrainConfig | dict[str, Any] | None
                       ) -> TrainConfig:
        """``defaults`` updated with ``overrides`` (a TrainConfig is taken as is); errors name the key."""
        if isinstance(overrides, TrainConfig):
            return overrides
        return build(cls, {**(defaults or {}), **(overrides or {})}, what="training setting")

    def stream_seed(self, identity: Mapping[str, Any]) -> int:
        """The seed of a model's random streams (sampling, initialisation, dropout). ``streams="shared"``: ``seed``.
        ``"model"``: a 64-bit seed derived from ``seed``, the model's ``identity`` (its name and settings) and the
        training settings that shape learning (:data:`STREAM_SETTINGS`), so two models (or two grid points of one)
        trained with the same ``seed`` draw independent streams, and no epoch is lucky for all of them at once."""
        if self.streams == "shared":
            return self.seed
        key = json.dumps({"model": identity, **{k: getattr(self, k) for k in STREAM_SETTINGS}}, sort_keys=True,
                         default=str)
        return int(np.random.SeedSequence([self.seed % 2**64, zlib.crc32(key.encode())]).generate_state(
            1, np.uint64)[0] % 2**63)

    def precision_choice(self, bf16_path: bool, model: str = "the model") -> PrecisionChoice:
        """What ``precision`` means here for a model with (``bf16_path``) or without dense products to run in bf16,
        on ``device`` (see :mod:`lmrec.train.precision`)."""
        return choose(self.precision, self.device, bf16_path, model)

    def with_precision(self, bf16_path: bool, model: str = "the model") -> TrainConfig:
        """This config with ``precision`` resolved to "fp32" or "bf16" (:meth:`precision_choice`)."""
        used = self.precision_choice(bf16_path, model).used
        return self if used == self.precision else dataclasses.replace(self, precision=used)

    @property
    def metric_name(self) -> str:
        return self.metric.partition("@")[0]

    @property
    def metric_k(self) -> int:
        return int(self.metric.partition("@")[2])


def with_legacy(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A saved training config with the settings added since it was written filled in with what such runs did
    (:data:`LEGACY_VALUES`), so it compares equal to the same settings asked for today."""
    return {**LEGACY_VALUES, **saved}


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)`` after checking that this machine has it."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(Argument("device", device), ": torch sees no CUDA GPU on this machine (use ",
                            Argument("device", "cpu"), ")")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ArgumentError(Argument("device", device), ": torch sees no Apple MPS device here (use ",
                            Argument("device", "cpu"), ")")
    return torch.device(device)


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors (inside tuples / lists) moved to ``device``; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    seconds: float  # training seconds of this epoch (evaluation excluded)
    valid: dict[str, float] | None = None
    steps: int = 0  # optimiser steps taken in this epoch


MAX_EPOCHS, EARLY_STOP, TIME_BUDGET = "max epochs", "early stop", "time budget"
STOP_REASONS = ((EARLY_STOP, "patience"), (MAX_EPOCHS, "budget"), (TIME_BUDGET, "time"))


@dataclass
class TrainLog:
    records: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    seconds_to_best: float = 0.0  # training + validation seconds until the best epoch was reached
    total_seconds: float = 0.0
    stopped: str = MAX_EPOCHS
    resumed_at: int | None = None  # the epoch of the checkpoint a resumed run started from
    seconds_before_resume: float = 0.0  # training + validation seconds spent before the checkpoint resumed from

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainLog:
        records = [EpochRecord(**r) for r in raw.get("records", [])]
        return cls(**{**raw, "records": records})

    @staticmethod
    def reason(stopped: str | None) -> str:
        """The one word for why training ended, from ``stopped`` as the trainer writes it: ``patience`` (no
        validation improvement in ``patience`` evaluations), ``budget`` (the epoch budget), ``time`` (a wall-clock
        cap), or ``""`` (anything else, e.g. nothing to train)."""
        return next((word for prefix, word in STOP_REASONS if (stopped or "").startswith(prefix)), "")

    @property
    def converged(self) -> bool:
        """False when the best validation epoch is the last epoch run (the run was still improving)."""
        return not self.records or self.best_epoch != self.records[-1].epoch


class Trainable:
    """What the trainer trains, every hook declared here with its default (a model overrides what it needs):

    - ``parameters()``, ``batches(rng, batch_size)`` (one epoch), ``loss(batch)``, ``state()`` / ``load_state()``
      and ``set_training(training)`` (train / eval mode; drop cached inference vectors): every trainable has them;
    - ``param_groups(lr)``: torch optimizer parameter groups, for parameters that learn at their own rate (default
      None: every parameter at ``lr``);
    - ``extra_state()`` / ``load_extra_state(state)``: training state outside the parameters (e.g. a private random
      generator), saved in checkpoints (default: none);
    - data-parallel training (:mod:`.distributed`): ``supports_distributed`` and a ``loss`` that is a mean over the
      batch's rows; terms over the whole batch go in ``loss_parts(rows, whole) -> (mean over rows, whole-batch
      terms)`` (default: ``(loss(rows), 0)``), and ``row_fields`` names the batch fields that are per row when some
      are not (default None: every field).
    """

    name: str = ""
    supports_distributed: ClassVar[bool] = False

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        raise NotImplementedError

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[Any]:
        raise NotImplementedError

    def loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def set_training(self, training: bool) -> None:
        """Switch train / eval mode (and drop cached inference vectors)."""

    def param_groups(self, lr: float) -> list[dict[str, Any]] | None:
        return None

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def loss_parts(self, rows: Any, whole: Any) -> tuple[torch.Tensor, torch.Tensor | float]:
        return self.loss(rows), 0.0

    @property
    def row_fields(self) -> tuple[int, ...] | None:
        return None


Validate = Callable[[], dict[str, float]]  # metrics of the current state on VALIDATION data
# called with (epoch, validation metrics) after each validation; what it raises stops training (e.g. a search's
# pruning) and reaches the caller unchanged
OnValidation = Callable[[int, dict[str, float]], None]


class Trainer:
    """The training loop shared by every gradient-trained model of lmrec (CF, CRS, RTA, zero-shot).

    ``log_path``: one JSON line per epoch; ``checkpoint_path``: the resumable state (see :mod:`.checkpoint`),
    written every ``checkpoint_every`` epochs and once more when training ends (marked finished: resuming it
    restores the best state without training again). Whoever completes the run folder removes it.
    """

    def __init__(self, config: TrainConfig | None = None, log_path: Path | None = None,
                 checkpoint_path: Path | None = None):
        self.config = config or TrainConfig()
        self.log_path = log_path
        self.checkpoint_path = checkpoint_path
        self.world = distributed.World()  # set by run(); only the main process writes the log and checkpoints

    @classmethod
    def in_folder(cls, config: TrainConfig, folder: Path | None) -> Trainer:
        """A trainer writing its per-epoch log and checkpoint into the run folder ``folder`` (nowhere when None)."""
        if folder is None:
            return cls(config)
        return cls(config, Path(folder) / LOG_FILE, Path(folder) / CHECKPOINT_FILE)

    def run(self, model: Trainable, validate: Validate | None, resume: bool = False, seed: int | None = None,
            on_validation: OnValidation | None = None) -> TrainLog:
        """Epochs of ``model.batches`` with ``cfg.optimizer``; every ``eval_every`` epochs ``validate()`` must
        return ``cfg.metric``; the best state is kept and restored. Without ``validate`` the last state is kept.
        ``resume``: continue from ``checkpoint_path`` (same settings), giving the same result as an unbroken run.
        ``seed``: of the batches' random stream (default ``cfg.seed``; models pass ``cfg.stream_seed(...)``).
        With ``cfg.steps_per_epoch`` an epoch is that many batches, drawn from ``model.batches`` called afresh as
        often as needed (the rest of a pass is not carried over: an epoch starts from the saved random state, so a
        resumed run equals an unbroken one). ``on_validation(epoch, metrics)``: called after each validation, once
        the epoch is logged; an exception it raises ends training and propagates (no end checkpoint is written).
        On CPU it trains in torch's deterministic kernels (:mod:`.determinism`): one seed and thread count give the
        same numbers on every run."""
        with deterministic_kernels(resolve_device(self.config.device)):
            return self._run(model, validate, resume, seed, on_validation)

    def _run(self, model: Trainable, validate: Validate | None, resume: bool, seed: int | None,
             on_validation: OnValidation | None) -> TrainLog:
        """:meth:`run`'s epochs (in deterministic kernels on CPU)."""
        cfg = self.config
        world = distributed.current()
        if world.active and not model.supports_distributed:
            raise LmrecError(f"{model.name or 'this model'} does not support distributed training; "
                             "run it in one process")
        self.world = world
        seed = cfg.seed if seed is None else seed
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
        groups = model.param_groups(cfg.lr)  # per-parameter learning rates, where a model has them
        optimizer = optimizer_class(groups if groups is not None else params, lr=cfg.lr,
                                    weight_decay=cfg.weight_decay)
        log = TrainLog()
        best_state: dict[str, Any] | None = None
        bad_evals, first_epoch, elapsed, finished = 0, 1, 0.0, False
        if resume:
            restored = self._restore(model, optimizer, rng)
            if restored is not None:
                log, best_state, bad_evals, elapsed, finished = restored
                first_epoch = log.records[-1].epoch + 1 if log.records else 1
                log.resumed_at, log.seconds_before_resume = first_epoch - 1, elapsed
        if world.any(first_epoch != world.from_main(first_epoch)):
            raise LmrecError(f"{self.checkpoint_path}: the training processes found different checkpoints to resume "
                             "from; a distributed run folder must be on storage that every machine sees")
        self._rewrite_log(log)
        device = resolve_device(cfg.device)
        start = clock.now() - elapsed
        last_epoch = first_epoch - 1 if finished else cfg.epochs  # a finished checkpoint: nothing left to train
        epochs = tqdm(range(first_epoch, last_epoch + 1), desc=f"train {model.name}",
                      disable=not cfg.progress, initial=first_epoch - 1, total=cfg.epochs)
        for epoch in epochs:
            t0 = clock.now()
            model.set_training(True)
            total, n_batches = 0.0, 0
            for batch in _epoch_batches(model, rng, cfg):
                optimizer.zero_grad(set_to_none=True)
                loss = _rank_loss(model, to_device(batch, device), world)
                if loss.requires_grad:
                    loss.backward()
                loss = world.average_gradients(params, loss)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}; lower the learning rate")
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                total += loss.item()
                n_batches += 1
            model.set_training(False)
            record = EpochRecord(epoch, total / max(n_batches, 1), clock.now() - t0, steps=n_batches)
            out_of_time = cfg.max_minutes is not None and clock.now() - start > 60 * cfg.max_minutes
            out_of_time = world.from_main(out_of_time)  # clocks differ: every rank stops at rank 0's epoch
            last = epoch == cfg.epochs or out_of_time
            if validate is not None and (epoch % cfg.eval_every == 0 or last):
                record.valid = validate()
                if cfg.metric not in record.valid:
                    raise LmrecError(f"validation returned {sorted(record.valid)}, "
                                     f"not the selection metric {cfg.metric}")
                score = record.valid[cfg.metric]
                if score > log.best_score:
                    log.best_score, log.best_epoch = score, epoch
                    log.seconds_to_best = clock.now() - start
                    best_state = copy.deepcopy(model.state())
                    bad_evals = 0
                else:
                    bad_evals += 1
                epochs.set_postfix(loss=f"{record.loss:.4f}", **{cfg.metric: f"{score:.4f}"},
                                   best=f"{log.best_score:.4f}@{log.best_epoch}")
            log.records.append(record)
            self._append_log(record)
            if on_validation is not None and record.valid is not None:
                on_validation(epoch, dict(record.valid))
            stop = None
            if bad_evals >= cfg.patience:
                stop = f"{EARLY_STOP}: no validation improvement in {cfg.patience} evaluations"
            elif last and epoch != cfg.epochs:
                stop = f"{TIME_BUDGET} of {cfg.max_minutes} minutes"
            if stop is None and not last and epoch % cfg.checkpoint_every == 0:
                self._checkpoint(model, optimizer, rng, log, best_state, bad_evals, clock.now() - start)
            if stop is not None:
                log.stopped = stop
                break
        log.total_seconds = clock.now() - start
        if not finished:  # the end state too: results lost after training (a full disk) cost no retraining
            self._checkpoint(model, optimizer, rng, log, best_state, bad_evals, log.total_seconds, finished=True)
        if best_state is not None:
            model.load_state(best_state)
        model.set_training(False)
        return log

    # -- checkpoints -----------------------------------------------------------------------------------------
    def _checkpoint(self, model: Trainable, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
                    log: TrainLog, best_state: dict[str, Any] | None, bad_evals: int, elapsed: float,
                    finished: bool = False) -> None:
        if self.checkpoint_path is None or not self.world.is_main:
            return
        tensors = tensorfile.tensor_dict(model.state(), "model.")
        if best_state is not None:
            tensors.update(tensorfile.tensor_dict(best_state, "best."))
        optim_tensors, optim_meta = ckpt.optimizer_state(optimizer)
        tensors.update(optim_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():  # noise on the GPU draws from this process's device generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        tensors.update(tensorfile.tensor_dict(model.extra_state(), "extra."))
        meta = {"config": as_dict(self.config), "log": log.to_dict(), "bad_evals": bad_evals, "elapsed": elapsed,
                "finished": finished,
                "has_best": best_state is not None, "numpy_rng": rng.bit_generator.state, "optimizer": optim_meta}
        meta = json.loads(json.dumps(meta, default=_json_default))
        tensorfile.save_tensors(Path(self.checkpoint_path), tensors, meta)

    def _restore(self, model: Trainable, optimizer: torch.optim.Optimizer, rng: np.random.Generator
                 ) -> tuple[TrainLog, dict[str, Any] | None, int, float, bool] | None:
        path = self.checkpoint_path
        if path is None or not Path(path).exists():
            return None
        tensors, meta = tensorfile.load_tensors(Path(path))
        saved = {k: v for k, v in with_legacy(meta["config"]).items() if k not in RESUME_MAY_CHANGE}
        wanted = {k: v for k, v in as_dict(self.config).items() if k not in RESUME_MAY_CHANGE}
        if saved != wanted:
            diff = sorted(k for k in wanted if saved.get(k) != wanted[k])
            raise LmrecError(f"{path}: the checkpoint was made with other training settings ({', '.join(diff)}); "
                             "resume with the same settings, or start again with --overwrite")
        model.load_state(tensorfile.with_prefix(tensors, "model."))
        best = tensorfile.with_prefix(tensors, "best.") if meta["has_best"] else None
        ckpt.load_optimizer_state(optimizer, tensors, meta["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():  # every rank's device drew what rank 0's did
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        rng.bit_generator.state = meta["numpy_rng"]
        model.load_extra_state(tensorfile.with_prefix(tensors, "extra."))
        log = TrainLog.from_dict(meta["log"])
        last = log.records[-1].epoch if log.records else 0
        # a run that ended at its epoch budget goes on when the budget was raised; an early stop stays stopped
        finished = bool(meta.get("finished")) and not (log.stopped == MAX_EPOCHS and self.config.epochs > last)
        return log, best, int(meta["bad_evals"]), float(meta["elapsed"]), finished

    # -- the per-epoch log -----------------------------------------------------------------------------------
    def _rewrite_log(self, log: TrainLog) -> None:
        """Start ``log_path`` afresh with the records so far (none, or those of a resumed checkpoint)."""
        if self.log_path is None or not self.world.is_main:
            return
        from lmrec.io import atomic_write

        lines = "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in log.records)
        atomic_write(Path(self.log_path), lambda f: f.write(lines))

    def _append_log(self, record: EpochRecord) -> None:
        if self.log_path is None or not self.world.is_main:
            return
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(record)) + "\n")


def _epoch_batches(model: Trainable, rng: np.random.Generator, cfg: TrainConfig) -> Iterator[Any]:
    """One epoch: a pass of ``model.batches``, or exactly ``cfg.steps_per_epoch`` batches (passes chained)."""
    if cfg.steps_per_epoch is None:
        return iter(model.batches(rng, cfg.batch_size))

    def passes() -> Iterator[Any]:
        while True:
            empty = True
            for batch in model.batches(rng, cfg.batch_size):
                empty = False
                yield batch
            if empty:
                return

    return islice(passes(), cfg.steps_per_epoch)


def _rank_loss(model: Trainable, batch: Any, world: distributed.World) -> torch.Tensor:
    """The loss this process minimises. One process: ``model.loss(batch)``. Rank r of N holding rows B_r of the
    global batch B: (|B_r|·N/|B|)·L_rows(B_r) + L_batch(B), so that the gradient averaged over ranks is the
    one-process gradient (see :mod:`.distributed`)."""
    if not world.active:
        return model.loss(batch)
    rows = world.share(batch, model.row_fields)
    n, n_rows = _n_rows(batch), _n_rows(rows)
    if n_rows == 0:  # a batch smaller than the world: no rows here (weight 0), the whole-batch terms still count
        rows = batch
    row_loss, whole = model.loss_parts(rows, batch)
    return row_loss * (n_rows * world.size / n) + whole


def _n_rows(batch: Any) -> int:
    return len(batch if isinstance(batch, torch.Tensor) else batch[0])


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} into a checkpoint header")
