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

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmrec.data.conversations import CRSData, CRSSample, expand_pairs
from lmrec.errors import LmrecError
from lmrec.eval.crs import evaluate_crs
from lmrec.models.crs.base import CRSRecommender, split_samples
from lmrec.train.trainer import TrainConfig, Trainer, TrainLog, resolve_device

PAD = -1  # padding value of history tensors (right padding)
MAX_HISTORY = 128  # the official RecSys input keeps the last 128 mentioned items
Inputs = Callable[[Sequence[CRSSample]], tuple[torch.Tensor, ...]]  # samples -> the module's arguments


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


#: the official adapt step's schedule (AdamW, lr 1e-3, batch 256, gradient clip 5, validation HR@10 every epoch)
CRS_TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 200, "lr": 1e-3, "batch_size": 256, "eval_every": 1, "patience": 10,
                                      "metric": "hr@10", "eval_batch_size": 256, "optimizer": "adamw",
                                      "grad_clip": 5.0}


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


class _PairObjective:
    """The trainer's view of a CRS module: batches of training (turn, target) rows and their CE loss."""

    def __init__(self, module: nn.Module, inputs: Inputs, train: Sequence[CRSSample], seed: int,
                 n_negatives: int | None, name: str):
        pairs = expand_pairs(train)
        if not pairs:
            raise LmrecError("no training (turn, target) pairs: the training samples have no targets")
        self.module, self.inputs, self.train, self.name = module, inputs, train, name
        self.sample_of = [p.sample for p in pairs]
        self.target_of = torch.as_tensor([p.target for p in pairs], dtype=torch.long)
        self.n_negatives = n_negatives
        self.generator = torch.Generator().manual_seed(seed)  # sampled negatives
        # per-parameter learning rates, if the module has them
        self.param_groups = getattr(module, "param_groups", None)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[np.ndarray]:
        order = rng.permutation(len(self.sample_of))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def loss(self, rows: np.ndarray) -> torch.Tensor:
        batch = [self.train[self.sample_of[r]] for r in rows]
        logits = self.module(*self.inputs(batch))
        targets = self.target_of[torch.from_numpy(rows)].to(logits.device)
        return sampled_cross_entropy(logits, targets, self.n_negatives, self.generator)

    def score(self, samples: Sequence[CRSSample]) -> torch.Tensor:
        with torch.no_grad():
            return self.module(*self.inputs(samples))

    def state(self) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)

    def set_training(self, training: bool) -> None:
        self.module.train(training)

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


def fit_crs_module(
    module: nn.Module,
    inputs: Inputs,
    train: Sequence[CRSSample],
    valid: Sequence[CRSSample],
    n_items: int,
    config: TrainConfig,
    n_negatives: int | None = None,
    folder: Path | None = None,
    resume: bool = False,
    name: str = "",
    seed: int | None = None,
) -> TrainLog:
    """Train ``module`` so that ``module(*inputs(samples))`` -> (len(samples), n_items) logits scores the targets.

    ``inputs`` turns a batch of samples (one per training pair, a sample repeated per target) into the module's
    arguments, e.g. ``lambda s: (history_tensor([x.mentioned for x in s]),)``. Runs :class:`lmrec.train.Trainer`,
    validating with :func:`evaluate_crs` on ``valid``; without validation samples the last state is kept.
    ``n_negatives``: see :func:`sampled_cross_entropy`; ``folder``: the per-epoch log and the checkpoint;
    ``seed``: of the sampling streams (default ``config.seed``; models pass their :meth:`Model.stream_seed`).
    """
    cfg = config
    k = _metric_k(cfg.metric)
    seed = cfg.seed if seed is None else seed
    objective = _PairObjective(module, inputs, train, seed, n_negatives, name)

    def validate() -> dict[str, float]:
        result = evaluate_crs(objective.score, valid, n_items, ks=(k,), batch_size=cfg.eval_batch_size)
        return {m: est.mean for m, est in result.summary().items()}

    return Trainer.in_folder(cfg, folder).run(objective, validate if valid else None, resume=resume, seed=seed)


def _metric_k(metric: str) -> int:
    name, _, k = metric.partition("@")
    if name not in ("hr", "ndcg") or not k.isdigit():
        raise ValueError(f"selection metric {metric!r} must look like 'hr@10' or 'ndcg@10'")
    return int(k)


class HistoryRecommender(CRSRecommender):
    """A CRS recommender around a torch module scoring the catalog from the mentioned items.

    Subclasses set ``Config`` (with ``max_len`` and ``n_negatives`` fields) and implement :meth:`build`;
    ``score`` feeds the last ``max_len`` mentioned items of each sample to the module in eval mode.
    """

    trainable: ClassVar[bool] = True
    train_defaults: ClassVar[dict[str, Any]] = CRS_TRAIN_DEFAULTS

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.module: nn.Module | None = None

    @abstractmethod
    def build(self, n_items: int) -> nn.Module:
        """A fresh module for a catalog of ``n_items`` items."""

    def inputs(self, samples: Sequence[CRSSample]) -> tuple[torch.Tensor, ...]:
        return (history_tensor([s.mentioned for s in samples], self.config.max_len).to(self.device),)

    def fit(self, data: CRSData, train: TrainConfig | dict | None = None, *, features: Any = None,
            base: Any = None, folder: Path | None = None, resume: bool = False) -> TrainLog:
        cfg = self.train_config(train, self.config)
        self.device = resolve_device(cfg.device)
        self.n_items = len(data.catalog)
        seed = self.stream_seed(cfg)
        torch.manual_seed(seed)  # initialisation
        self.module = self.build(self.n_items).to(self.device)
        return fit_crs_module(self.module, self.inputs, split_samples(data, features, "train"),
                              split_samples(data, features, "valid"), self.n_items, cfg, self.config.n_negatives,
                              folder, resume, name=self.name, seed=seed)

    def score(self, samples: Sequence[CRSSample]) -> torch.Tensor:
        if self.module is None:
            raise LmrecError(f"{self.name}: call fit before score")
        self.module.eval()
        with torch.no_grad():
            return self.module(*self.inputs(samples))

    def state(self) -> dict[str, torch.Tensor]:
        if self.module is None:
            raise LmrecError(f"{self.name}: nothing to save before fit")
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.module = self.build(self.n_items).to(self.device)
        self.module.load_state_dict(state)
        self.module.eval()
