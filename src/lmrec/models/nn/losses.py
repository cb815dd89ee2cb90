"""Training losses, each with its formula."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """BPR = mean over the batch of −log σ(s⁺ − s⁻)  (``pos``: (b,), ``neg``: (b,) or (b, n) averaged)."""
    if neg.dim() == 2:
        pos = pos[:, None]
    return F.softplus(neg - pos).mean()


def info_nce(pos: torch.Tensor, neg: torch.Tensor, tau: float, neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE = mean over the batch of −log[e^{s⁺/τ} / (e^{s⁺/τ} + Σⱼ e^{s⁻ⱼ/τ})].

    ``pos``: (b,), ``neg``: (b, n); ``neg_mask`` (b, n) false where a sampled negative must not count.
    """
    logits = torch.cat([pos[:, None], neg], dim=1) / tau
    if neg_mask is not None:
        keep = torch.cat([torch.ones_like(pos, dtype=torch.bool)[:, None], neg_mask], dim=1)
        logits = logits.masked_fill(~keep, -torch.inf)
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def sampled_softmax(pos: torch.Tensor, neg: torch.Tensor, collisions: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over [the positive, sampled negatives] = mean over the batch of
    −log[e^{s⁺} / (e^{s⁺} + Σⱼ e^{s⁻ⱼ})] (:func:`info_nce` at τ = 1). ``pos``: (b,), ``neg``: (b, n); ``collisions``
    (b, n) true where a negative is the row's positive itself: left out of that row."""
    return info_nce(pos, neg, 1.0, None if collisions is None else ~collisions)


def sample_negatives(n_items: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``min(n, n_items)`` distinct items drawn uniformly (without replacement) from ``range(n_items)``."""
    return torch.randperm(n_items, generator=generator)[: min(n, n_items)]
