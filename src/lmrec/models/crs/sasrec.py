"""SASRec over the items mentioned in a conversation, as in the official RTA code (``adapt_step/recsys.py``).

A causal transformer over [CLS] + history (at most ``max_len`` = 128 items, so 129 positions)::

    x_0 = E[tokens] + P[positions]                      E: (n_items + 2) × d, [CLS] = n_items, [PAD] = n_items + 1
    h = LayerNorm(TransformerBlocks_causal(dropout(x_0)))   2 pre-LN blocks, 2 heads, d = 64, FFN 4d, GELU, dropout 0.1
    logits_i = h[last non-pad position] · E[i] + b_i     (output weights tied to the input table)

The official code runs HF ``GPT2Model`` (n_layer 2, n_head 2, n_embd 64, dropout 0.1, n_positions max_len + 1).
This is the same network built from ``torch.nn.TransformerEncoder``: pre-LN (``norm_first``) blocks with a causal
mask, learned positions, GELU (tanh form, GPT-2's ``gelu_new``), 4d feed-forward, a final LayerNorm (GPT-2's
``ln_f``) and GPT-2's initialisation (N(0, 0.02), residual projections N(0, 0.02/√(2·layers))). With right
padding and a causal mask, no real position ever attends to a pad, so no padding mask is needed (GPT-2's
attention mask changes nothing at real positions). Remaining differences: torch's layer also applies dropout
after the FFN activation, and GPT-2's attention uses separate Conv1D weights (same function).

Input: ``history`` (b, L ≤ max_len) right-padded with ``PAD`` = −1. An empty history ([CLS] only) works.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from lmrec.models.base import ModelConfig, register
from lmrec.models.crs.training import MAX_HISTORY, PAD, HistoryRecommender, item_tokens
from lmrec.settings import settings


class SASRec(nn.Module):
    """``forward(history (b, L), PAD = −1) -> logits (b, n_items)``; see the module docstring."""

    def __init__(self, n_items: int, dim: int = 64, n_layers: int = 2, n_heads: int = 2, dropout: float = 0.1,
                 max_len: int = MAX_HISTORY, bias: bool = True):
        super().__init__()
        self.n_items, self.max_len = int(n_items), int(max_len)
        self.embedding = nn.Embedding(self.n_items + 2, dim, padding_idx=self.n_items + 1)
        self.positions = nn.Embedding(self.max_len + 1, dim)
        self.dropout = nn.Dropout(dropout)
        gelu = partial(F.gelu, approximate="tanh")  # GPT-2's gelu_new
        layer = nn.TransformerEncoderLayer(dim, n_heads, 4 * dim, dropout, activation=gelu, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(torch.zeros(self.n_items)) if bias else None
        self._init_gpt2(n_layers)

    def _init_gpt2(self, n_layers: int) -> None:
        for name, p in self.named_parameters():
            if name == "bias" or ".norm" in name or name.startswith("norm."):
                continue  # item bias 0; LayerNorm weights 1, biases 0 (their defaults)
            if p.dim() == 1:
                nn.init.zeros_(p)
            elif name.endswith("out_proj.weight") or name.endswith("linear2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layers))
            else:
                nn.init.normal_(p, 0.0, 0.02)
        with torch.no_grad():
            self.embedding.weight[self.n_items + 1].zero_()

    def hidden(self, history: torch.Tensor) -> torch.Tensor:
        """(b, d) final hidden state at the last non-pad position of [CLS] + history."""
        if history.shape[-1] > self.max_len:
            raise ValueError(f"history of length {history.shape[-1]} > max_len {self.max_len}; "
                             "keep the last max_len items (history_tensor(..., max_len))")
        device = self.embedding.weight.device
        tokens = item_tokens(history, self.n_items).to(device)
        length = tokens.shape[1]
        x = self.embedding(tokens) + self.positions(torch.arange(length, device=device))[None]
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=device), diagonal=1)
        h = self.norm(self.blocks(self.dropout(x), mask=causal))
        last = (history.to(device) != PAD).sum(dim=1)  # index of the last real token ([CLS] is at 0)
        return h[torch.arange(len(h), device=device), last]

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        logits = self.hidden(history) @ self.embedding.weight[: self.n_items].T
        return logits + self.bias if self.bias is not None else logits


@settings
class SASRecConfig(ModelConfig):
    dim: PositiveInt = 64
    n_layers: PositiveInt = 2
    n_heads: PositiveInt = 2
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    max_len: PositiveInt = MAX_HISTORY
    bias: bool = True  # the official scripts run with recsys_with_bias True
    n_negatives: PositiveInt | None = None  # None: full softmax over the catalog; else sampled per batch


@register("sasrec")
class SASRecRecommender(HistoryRecommender):
    """SASRec on the mentioned items, trained on the training (turn, target) pairs (see :mod:`.training`)."""

    Config = SASRecConfig

    def build(self, n_items: int) -> SASRec:
        c = self.config
        return SASRec(n_items, c.dim, c.n_layers, c.n_heads, c.dropout, c.max_len, c.bias)
