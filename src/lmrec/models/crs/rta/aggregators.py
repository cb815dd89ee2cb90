"""Reindex aggregators: a title's multi-token LLM embeddings -> one single-token item embedding.

Every aggregator maps ``tokens`` (n_items, max_tokens, d) right-padded and ``lengths`` (n_items,) (≥ 1) to
(n_items, d), and never looks at positions ≥ length (padding cannot change the result):

- ``sum``:         e = Σ_{t < len} x_t                                     (no parameters)
- ``weighted``:    a = softmax_{t < len}(w_t),  e = Linear_{d→d}(Σ_t a_t x_t)   (w: one learned logit per position)
- ``gru``:         h = BiGRU(x_{<len}) (hidden d/4 per direction, packed),  e = Linear_{d/2→d}(h_{len−1})
- ``transformer``: h = TransformerEncoderLayer(x, key padding mask) (nhead heads, dropout 0.1),  e = h_{len−1}

As in the official ``reindex_step`` (papers.md 1.4): the GRU output at position len−1 is the forward state after the
whole title concatenated with the backward state of the last token alone; the transformer keeps its last valid
position. Unlike the official code the GRU input is packed, so the backward direction starts at the last real
token instead of running over the padding first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

__all__ = ["AGGREGATORS", "Aggregator", "GRUAggregator", "SumAggregator", "TransformerAggregator",
           "WeightedAggregator", "build_aggregator", "length_mask"]


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(n, width) bool: True at positions < length."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def _check(tokens: torch.Tensor, lengths: torch.Tensor) -> None:
    if tokens.dim() != 3 or lengths.shape != tokens.shape[:1]:
        raise ValueError(f"expected tokens (n, T, d) and lengths (n,), got {tuple(tokens.shape)} and "
                         f"{tuple(lengths.shape)}")
    if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]):
        raise ValueError(f"lengths must lie in [1, {tokens.shape[1]}]")


class Aggregator(nn.Module):
    """Base class: ``forward(tokens (n, T, d), lengths (n,)) -> (n, d)``."""

    kind = "aggregator"

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)


class SumAggregator(Aggregator):
    """e = Σ_{t < len} x_t (masked sum; no parameters)."""

    kind = "sum"

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _check(tokens, lengths)
        mask = length_mask(lengths, tokens.shape[1]).to(tokens.dtype)
        return (tokens * mask[:, :, None]).sum(dim=1)


class WeightedAggregator(Aggregator):
    """e = W·(Σ_t softmax_{t<len}(w)_t x_t) + b, with one learned logit w_t per position (init 0 = mean)."""

    kind = "weighted"

    def __init__(self, dim: int, max_tokens: int = 32):
        super().__init__(dim)
        self.position_logits = nn.Parameter(torch.zeros(max_tokens))
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _check(tokens, lengths)
        width = tokens.shape[1]
        if width > len(self.position_logits):
            raise ValueError(f"titles of {width} tokens, but this aggregator has {len(self.position_logits)} positions")
        mask = length_mask(lengths, width)
        logits = self.position_logits[:width][None, :].expand(len(tokens), -1).masked_fill(~mask, -torch.inf)
        weights = torch.softmax(logits, dim=1)  # (n, T), 0 on padding
        return self.proj((weights[:, :, None] * tokens).sum(dim=1))


class GRUAggregator(Aggregator):
    """h = BiGRU(x_{<len}) with hidden d/4 per direction (packed), e = Linear_{d/2→d}(h_{len−1}).

    h_{len−1} is [forward state after the whole title ; backward state after the last token alone], so only those
    are computed: the forward GRU over the packed title and one backward GRU step from h₀ = 0,
    h = (1 − z) ⊙ n with r, z = σ(W_i{r,z} x + b_i{r,z} + b_h{r,z}), n = tanh(W_in x + b_in + r ⊙ b_hn).
    ``nn.GRU(bidirectional=True)``'s output at len − 1 up to float rounding, outputs and gradients (tested), for
    2.7x less time per reindex step (``bench/reindex_step.py``): that output never sees the backward direction's
    other steps, nor ``weight_hh_l0_reverse``, which is kept so the parameters stay those of the bidirectional GRU
    and saved runs load (its gradient is None, so an optimizer leaves it as it is).
    """

    kind = "gru"

    def __init__(self, dim: int):
        super().__init__(dim)
        if dim % 4:
            raise ValueError(f"gru aggregator needs d divisible by 4, got {dim}")
        self.gru = nn.GRU(dim, dim // 4, num_layers=1, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(dim // 2, dim)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _check(tokens, lengths)
        g = self.gru
        packed = pack_padded_sequence(tokens, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h0 = tokens.new_zeros(1, len(tokens), g.hidden_size)
        weights = [g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0]
        _, h_n = torch.gru(packed.data, packed.batch_sizes, h0, weights, True, 1, 0.0, self.training, False)
        forward = h_n[0][packed.unsorted_indices]  # (n, d/4) in the input order
        last = tokens[torch.arange(len(tokens), device=tokens.device), lengths.to(tokens.device) - 1]  # (n, d)
        i_r, i_z, i_n = F.linear(last, g.weight_ih_l0_reverse, g.bias_ih_l0_reverse).chunk(3, dim=1)
        h_r, h_z, h_n_bias = g.bias_hh_l0_reverse.chunk(3)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        backward = (1 - z) * torch.tanh(i_n + r * h_n_bias)
        return self.proj(torch.cat([forward, backward], dim=1))


class TransformerAggregator(Aggregator):
    """h = TransformerEncoderLayer(x) with the padding masked out of attention, e = h_{len−1}."""

    kind = "transformer"

    def __init__(self, dim: int, nhead: int = 8, dropout: float = 0.1, dim_feedforward: int = 2048):
        super().__init__(dim)
        if dim % nhead:
            raise ValueError(f"transformer aggregator: nhead={nhead} must divide d={dim}")
        self.layer = nn.TransformerEncoderLayer(dim, nhead, dim_feedforward, dropout, batch_first=True)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _check(tokens, lengths)
        width = int(lengths.max()) if len(lengths) else tokens.shape[1]
        tokens = tokens[:, :width]  # positions past the longest title are padding for every row
        padding = ~length_mask(lengths.to(tokens.device), width)
        # the math path (not the nested-tensor fast path) so padded rows give the same numbers as unpadded ones
        h = self.layer(tokens, src_key_padding_mask=padding)
        return h[torch.arange(len(tokens), device=tokens.device), lengths.to(tokens.device) - 1]


AGGREGATORS: dict[str, type[Aggregator]] = {
    "sum": SumAggregator,
    "weighted": WeightedAggregator,
    "gru": GRUAggregator,
    "transformer": TransformerAggregator,
}
_ALIASES = {"rnn": "gru", "trm": "transformer"}


def build_aggregator(name: str, dim: int, max_tokens: int = 32) -> Aggregator:
    """``sum`` | ``weighted`` | ``gru`` (alias ``rnn``) | ``transformer`` (alias ``trm``) for width ``dim``."""
    key = _ALIASES.get(name, name)
    if key not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}: expected one of {', '.join(AGGREGATORS)}")
    if key == "weighted":
        return WeightedAggregator(dim, max_tokens)
    return AGGREGATORS[key](dim)
