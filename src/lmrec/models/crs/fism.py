"""FISM over the items mentioned in a conversation, as in the official RTA code (``adapt_step/recsys.py``).

One embedding table E ((n_items + 2) × d: items, [CLS] = n_items, [PAD] = n_items + 1), init N(0, 0.01)::

    u = (E[CLS] + Σ_{j ∈ history} E[j]) / (1 + |history|)^α          (α = 0.5)
    logits_i = u · E[i] + b_i                                          (i over the catalog)

Input: ``history`` (b, L) int64 item indices right-padded with ``PAD`` = −1 (see
:func:`lmrec.models.crs.training.history_tensor`); [CLS] is prepended inside, so an empty history scores with E[CLS].

Difference from the official code: there the padding row is re-initialised by ``normal_(0, 0.01)`` after
``padding_idx`` zeroed it, so every pad position adds the same random vector to the sum (while the count excludes
pads). Here the pad row stays zero: pads contribute nothing. Training (standalone baseline): full-softmax
cross-entropy over the catalog, one row per (turn, target) pair — exact, where the official gated model samples
1000 negatives per batch (``n_negatives=1000`` reproduces that).
"""

from __future__ import annotations

import torch
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt
from torch import nn

from lmrec.models.base import ModelConfig, register
from lmrec.models.crs.training import CRS_TRAIN_DEFAULTS, MAX_HISTORY, HistoryRecommender, item_tokens
from lmrec.settings import settings


class FISM(nn.Module):
    """``forward(history (b, L), PAD = −1) -> logits (b, n_items)``; see the module docstring for the formula."""

    def __init__(self, n_items: int, dim: int = 64, alpha: float = 0.5, bias: bool = True, init_std: float = 0.01):
        super().__init__()
        self.n_items, self.alpha = int(n_items), float(alpha)
        self.embedding = nn.Embedding(self.n_items + 2, dim, padding_idx=self.n_items + 1)
        nn.init.normal_(self.embedding.weight, 0.0, init_std)
        with torch.no_grad():
            self.embedding.weight[self.n_items + 1].zero_()
        self.bias = nn.Parameter(torch.zeros(self.n_items)) if bias else None

    def user(self, history: torch.Tensor) -> torch.Tensor:
        """Pooled (b, d) representation of [CLS] + history."""
        tokens = item_tokens(history, self.n_items).to(self.embedding.weight.device)
        count = (tokens != self.n_items + 1).sum(dim=1, keepdim=True).to(self.embedding.weight.dtype)
        return self.embedding(tokens).sum(dim=1) / count.pow(self.alpha)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        logits = self.user(history) @ self.embedding.weight[: self.n_items].T
        return logits + self.bias if self.bias is not None else logits


@settings
class FISMConfig(ModelConfig):
    dim: PositiveInt = 64
    alpha: float = 0.5
    bias: bool = True  # the official scripts run with recsys_with_bias True
    init_std: PositiveFloat = 0.01
    max_len: NonNegativeInt = MAX_HISTORY  # the last 128 mentioned items
    n_negatives: PositiveInt | None = None  # None: full softmax over the catalog; else sampled per batch


@register("fism")
class FISMRecommender(HistoryRecommender):
    """FISM on the mentioned items, trained on the training (turn, target) pairs (see :mod:`.training`)."""

    Config = FISMConfig
    # lr 1e-2 rather than the adapt step's 1e-3: chosen on INSPIRED *validation* HR@10 among {1e-3, 1e-2}
    # (1e-3 peaks at epoch 1, i.e. popularity + a bump for the mentioned items, then overfits)
    train_defaults = {**CRS_TRAIN_DEFAULTS, "lr": 1e-2}

    def build(self, n_items: int) -> FISM:
        c = self.config
        return FISM(n_items, c.dim, c.alpha, c.bias, c.init_std)
