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
from lmrec.eval.validation import turn_validation
from lmrec.inputs import ModelInputs
from lmrec.models.crs.base import CRSRecommender, split_samples
from lmrec.models.nn.losses import sample_negatives, sampled_softmax
from lmrec.models.queries import Conversations
from lmrec.train.trainer import Trainable, TrainConfig, Trainer, TrainLog, resolve_device

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
    """Full-softmax CE when ``n_negatives`` is None (or ≥ n_items − 1), else :func:`sampled_softmax` over [target,
    shared negatives] with collisions left out (see the module docstring). ``logits``: (b, n_items), ``targets``:
    (b,)."""
    n_items = logits.shape[1]
    if n_negatives is None or n_negatives >= n_items - 1:
        return F.cross_entropy(logits, targets)
    if n_negatives < 1:
        raise ValueError(f"n_negatives must be >= 1 or None, got {n_negatives}")
    neg = sample_negatives(n_items, n_negatives, generator).to(logits.device)
    pos = logits.gather(1, targets[:, None])[:, 0]
    return sampled_softmax(pos, logits[:, neg], neg[None, :] == targets[:, None])


PairLoss = Callable[[torch.Tensor, torch.Generator], torch.Tensor]  # (row indices, negatives' generator) -> loss


class PairObjective(Trainable):
    """The trainer's view of a conversational model learning from (turn, target) rows: each epoch the rows in a
    seeded random order, in batches; ``loss(rows, generator)`` is the model's loss on a batch of row indices (its
    negatives drawn from ``generator``, part of the training state); the learned state is ``module``'s;
    ``groups(lr)``: optimizer parameter groups, when the module has its own learning rates."""

    def __init__(self, name: str, module: nn.Module, n_rows: int, loss: PairLoss, seed: int,
                 groups: Callable[[float], list[dict[str, Any]]] | None = None):
        if n_rows == 0:
            raise LmrecError(f"{name}: no training (turn, target) pairs: the training samples have no targets")
        self.name, self.module, self.n_rows, self._loss, self._groups = name, module, n_rows, loss, groups
        self.generator = torch.Generator().manual_seed(seed)  # sampled negatives (drawn on the CPU)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.module.parameters()

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[torch.Tensor]:
        order = torch.from_numpy(rng.permutation(self.n_rows))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        return self._loss(rows, self.generator)

    def state(self) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)

    def set_training(self, training: bool) -> None:
        self.module.train(training)

    def param_groups(self, lr: float) -> list[dict[str, Any]] | None:
        return self._groups(lr) if self._groups is not None else None

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
    groups: Callable[[float], list[dict[str, Any]]] | None = None,
) -> TrainLog:
    """Train ``module`` so that ``module(*inputs(samples))`` -> (len(samples), n_items) logits scores the targets.

    ``inputs`` turns a batch of samples (one per training pair, a sample repeated per target) into the module's
    arguments, e.g. ``lambda s: (history_tensor([x.mentioned for x in s]),)``. Runs :class:`lmrec.train.Trainer`,
    validating on ``valid`` (:func:`lmrec.eval.validation.turn_validation`); without validation samples the last
    state is kept. ``n_negatives``: see :func:`sampled_cross_entropy`; ``folder``: the per-epoch log and the
    checkpoint; ``seed``: of the sampling streams (default ``config.seed``; models pass their
    :meth:`Model.stream_seed`); ``groups``: the module's optimizer parameter groups (:class:`PairObjective`).
    """
    seed = config.seed if seed is None else seed
    pairs = expand_pairs(train)
    sample_of = [p.sample for p in pairs]
    target_of = torch.as_tensor([p.target for p in pairs], dtype=torch.long)

    def loss(rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        logits = module(*inputs([train[sample_of[r]] for r in rows.tolist()]))
        return sampled_cross_entropy(logits, target_of[rows.cpu()].to(logits.device), n_negatives, generator)

    def scorer(samples: Sequence[CRSSample]) -> torch.Tensor:
        with torch.no_grad():
            return module(*inputs(samples))

    objective = PairObjective(name, module, len(pairs), loss, seed, groups)
    validate = turn_validation(scorer, valid, n_items, config)
    return Trainer.in_folder(config, folder).run(objective, validate, resume=resume, seed=seed)


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

    def fit(self, data: CRSData, train: TrainConfig | dict | None = None, *, inputs: ModelInputs | None = None,
            folder: Path | None = None, resume: bool = False, on_validation: Any = None) -> TrainLog:
        features = (inputs or ModelInputs()).features
        cfg = self.train_config(train, self.config)
        self.device = resolve_device(cfg.device)
        self.n_items = len(data.catalog)
        seed = self.stream_seed(cfg)
        torch.manual_seed(seed)  # initialisation
        self.module = self.build(self.n_items).to(self.device)
        return fit_crs_module(self.module, self.inputs, split_samples(data, features, "train"),
                              split_samples(data, features, "valid"), self.n_items, cfg, self.config.n_negatives,
                              folder, resume, name=self.name, seed=seed)

    def score_conversations(self, query: Conversations) -> torch.Tensor:
        if self.module is None:
            raise LmrecError(f"{self.name}: call fit before score")
        self.module.eval()
        with torch.no_grad():
            return self.module(*self.inputs(query.samples))

    def item_space(self) -> torch.Tensor | None:
        """The module's item embeddings (FISM, SASRec: ``embedding``, its catalog rows)."""
        embedding = getattr(self.module, "embedding", None)
        return embedding.weight[: self.n_items].detach() if embedding is not None else None

    def state(self) -> dict[str, torch.Tensor]:
        if self.module is None:
            raise LmrecError(f"{self.name}: nothing to save before fit")
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.module = self.build(self.n_items).to(self.device)
        self.module.load_state_dict(state)
        self.module.eval()
