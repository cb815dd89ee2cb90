"""A small training loop for torch conversational recommenders, and the history encoding FISM / SASRec share.

Training rows are (turn, target) pairs of the TRAINING samples (:func:`lmrec.data.conversations.expand_pairs`,
one row per target as in RTA). Loss, for logits s over the catalog and target t:

- full softmax (default): CE = −log(e^{s_t} / Σ_j e^{s_j}) over every catalog item — exact and cheap for the
  catalogs here (≤ 7k items);
- sampled: CE over [t, N negatives], the N items drawn uniformly without replacement from the catalog once per
  batch (shared by its rows); a negative equal to a row's target is masked out of that row. (The official RTA adapt
  step draws 1000 per batch with ``random.sample`` from the dataset's items and does not mask collisions.)

Every ``eval_every`` epochs the model is ranked on the VALIDATION samples with :func:`lmrec.eval.crs.evaluate_crs`
(``metric``, default HR@10, all targets, expected ties); the best state is kept and restored at the end; training
stops after ``patience`` evaluations without improvement. The test split is never looked at here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lmrec.data.conversations import CRSData, CRSSample, expand_pairs
from lmrec.errors import LmrecError
from lmrec.eval.crs import evaluate_crs
from lmrec.models.crs.base import CRSRecommender
from lmrec.train.trainer import EpochRecord, TrainLog

PAD = -1  # padding value of history tensors (right padding)
MAX_HISTORY = 128  # the official RecSys input keeps the last 128 mentioned items


def history_tensor(histories: Sequence[Sequence[int]], max_len: int = MAX_HISTORY) -> torch.Tensor:
    """(b, L) int64: row r = the last ``max_len`` items of ``histories[r]``, right-padded with ``PAD`` (−1);
    L = the longest kept history (0 when every history is empty)."""
    kept = [list(h)[-max_len:] if max_len > 0 else [] for h in histories]
    width = max((len(h) for h in kept), default=0)
    out = torch.full((len(kept), width), PAD, dtype=torch.long)
    for r, h in enumerate(kept):
        if h:
            out[r, : len(h)] = torch.as_tensor(h, dtype=torch.long)
    return out


def item_tokens(history: torch.Tensor, n_items: int) -> torch.Tensor:
    """[CLS] + history as embedding indices: items keep their index, CLS = n_items, PAD (−1) → n_items + 1
    (the official layout: ``num_items + 2`` rows, cls = num_items, pad = num_items + 1). Shape (b, L + 1)."""
    if history.dim() != 2:
        raise ValueError(f"history must be (batch, length), got shape {tuple(history.shape)}")
    history = history.long()
    if history.numel() and (history.max() >= n_items or history.min() < PAD):
        raise ValueError(f"history holds indices outside [0, {n_items}) and the pad value {PAD}")
    tokens = torch.where(history == PAD, torch.full_like(history, n_items + 1), history)
    cls = torch.full((history.shape[0], 1), n_items, dtype=torch.long, device=history.device)
    return torch.cat([cls, tokens], dim=1)


@dataclass
class CRSTrainConfig:
    """Training settings (defaults: the official adapt step's AdamW lr 1e-3, batch 256, gradient clip 5)."""

    epochs: int = 200
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    n_negatives: int | None = None  # None: full softmax over the catalog; else sampled negatives per batch
    eval_every: int = 1
    patience: int = 10
    metric: str = "hr@10"
    grad_clip: float | None = 5.0
    max_minutes: float | None = None
    seed: int = 2024
    eval_batch_size: int = 256
    progress: bool = True


def sampled_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, n_negatives: int | None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Full-softmax CE when ``n_negatives`` is None (or ≥ n_items − 1), else CE over [target, shared negatives]
    with collisions masked (see the module docstring). ``logits``: (b, n_items), ``targets``: (b,)."""
    n_items = logits.shape[1]
    if n_negatives is None or n_negatives >= n_items - 1:
        return F.cross_entropy(logits, targets)
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1 or None, got {n_negatives}")
    neg = torch.randperm(n_items, generator=generator)[:n_negatives].to(logits.device)
    pos = logits.gather(1, targets[:, None])
    neg_logits = logits[:, neg].masked_fill(neg[None, :] == targets[:, None], -torch.inf)
    sel = torch.cat([pos, neg_logits], dim=1)
    return F.cross_entropy(sel, torch.zeros_like(targets))


def fit_crs_module(
    module: nn.Module,
    inputs: Callable[[Sequence[CRSSample]], tuple[torch.Tensor, ...]],
    train: Sequence[CRSSample],
    valid: Sequence[CRSSample],
    n_items: int,
    config: CRSTrainConfig | None = None,
    log_path: Path | None = None,
    name: str = "",
) -> TrainLog:
    """Train ``module`` so that ``module(*inputs(samples))`` -> (len(samples), n_items) logits scores the targets.

    ``inputs`` turns a batch of samples (one per training pair, a sample repeated per target) into the module's
    arguments, e.g. ``lambda s: (history_tensor([x.mentioned for x in s]),)``. Without validation samples the last
    state is kept. Returns a :class:`lmrec.train.trainer.TrainLog`.
    """
    cfg = config or CRSTrainConfig()
    pairs = expand_pairs(train)
    if not pairs:
        raise LmrecError("no training (turn, target) pairs: the training samples have no targets")
    sample_of = torch.as_tensor([p.sample for p in pairs], dtype=torch.long)
    target_of = torch.as_tensor([p.target for p in pairs], dtype=torch.long)
    k = _metric_k(cfg.metric)
    torch.manual_seed(cfg.seed)  # dropout
    generator = torch.Generator().manual_seed(cfg.seed)  # batches and negatives
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scorer = _scorer(module, inputs)
    log = TrainLog()
    best_state: dict[str, Any] | None = None
    bad_evals = 0
    start = time.perf_counter()
    epochs = tqdm(range(1, cfg.epochs + 1), desc=f"train {name}", disable=not cfg.progress)
    for epoch in epochs:
        t0 = time.perf_counter()
        module.train()
        total, n_batches = 0.0, 0
        order = torch.randperm(len(pairs), generator=generator)
        for b in range(0, len(order), cfg.batch_size):
            rows = order[b : b + cfg.batch_size]
            batch = [train[i] for i in sample_of[rows].tolist()]
            optimizer.zero_grad(set_to_none=True)
            loss = sampled_cross_entropy(module(*inputs(batch)), target_of[rows], cfg.n_negatives, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}; lower the learning rate")
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            total += loss.item()
            n_batches += 1
        module.eval()
        record = EpochRecord(epoch, total / max(n_batches, 1), time.perf_counter() - t0)
        over_time = cfg.max_minutes is not None and time.perf_counter() - start > 60 * cfg.max_minutes
        last = epoch == cfg.epochs or over_time
        if valid and (epoch % cfg.eval_every == 0 or last):
            result = evaluate_crs(scorer, valid, n_items, ks=(k,), batch_size=cfg.eval_batch_size)
            record.valid = {m: est.mean for m, est in result.summary().items()}
            score = record.valid[cfg.metric]
            if score > log.best_score:
                log.best_score, log.best_epoch = score, epoch
                log.seconds_to_best = time.perf_counter() - start
                best_state = copy.deepcopy(module.state_dict())
                bad_evals = 0
            else:
                bad_evals += 1
            epochs.set_postfix(loss=f"{record.loss:.4f}", **{cfg.metric: f"{score:.4f}"},
                               best=f"{log.best_score:.4f}@{log.best_epoch}")
        log.records.append(record)
        _append_record(log_path, record)
        if bad_evals >= cfg.patience:
            log.stopped = f"early stop: no validation improvement in {cfg.patience} evaluations"
            break
        if over_time and epoch != cfg.epochs:
            log.stopped = f"time budget of {cfg.max_minutes} minutes"
            break
    log.total_seconds = time.perf_counter() - start
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return log


def _scorer(module: nn.Module, inputs: Callable[[Sequence[CRSSample]], tuple[torch.Tensor, ...]]):
    def score(samples: Sequence[CRSSample]) -> torch.Tensor:
        with torch.no_grad():
            return module(*inputs(samples))

    return score


def _metric_k(metric: str) -> int:
    name, _, k = metric.partition("@")
    if name not in ("hr", "ndcg") or not k.isdigit():
        raise ValueError(f"selection metric {metric!r} must look like 'hr@10' or 'ndcg@10'")
    return int(k)


def _append_record(path: Path | None, record: EpochRecord) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(dataclasses.asdict(record)) + "\n")


class HistoryRecommender(CRSRecommender):
    """A CRS recommender around a torch module scoring the catalog from the mentioned items.

    Subclasses set ``Config`` (a dataclass with a ``max_len`` field) and implement :meth:`build`; a
    ``train_config`` given to the constructor replaces the defaults (``CRSTrainConfig(**train_defaults)``) whole.
    ``score`` feeds the last ``max_len`` mentioned items of each sample to the module in eval mode.
    """

    Config: ClassVar[type[Any]]
    train_defaults: ClassVar[dict[str, Any]] = {}  # CRSTrainConfig fields this model changes by default

    def __init__(self, config: Any = None, train_config: CRSTrainConfig | None = None, **overrides: Any):
        base = config if config is not None else self.Config()
        self.config = dataclasses.replace(base, **overrides)
        self.train_config = train_config or CRSTrainConfig(**self.train_defaults)
        self.module: nn.Module | None = None
        self.n_items = 0
        self.log: TrainLog | None = None

    @abstractmethod
    def build(self, n_items: int) -> nn.Module:
        """A fresh module for a catalog of ``n_items`` items."""

    def inputs(self, samples: Sequence[CRSSample]) -> tuple[torch.Tensor, ...]:
        return (history_tensor([s.mentioned for s in samples], self.config.max_len),)

    def fit(self, data: CRSData, train: Sequence[CRSSample], valid: Sequence[CRSSample],
            log_path: Path | None = None) -> TrainLog:
        self.n_items = len(data.catalog)
        torch.manual_seed(self.train_config.seed)  # initialisation
        self.module = self.build(self.n_items)
        self.log = fit_crs_module(self.module, self.inputs, train, valid, self.n_items, self.train_config,
                                  log_path, name=self.name)
        return self.log

    def score(self, samples: Sequence[CRSSample]) -> torch.Tensor:
        if self.module is None:
            raise LmrecError(f"{self.name}: call fit before score")
        self.module.eval()
        with torch.no_grad():
            return self.module(*self.inputs(samples))

