"""InfoNCE between two views of the same nodes (graph contrastive learning, LM-CF alignment)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def view_info_nce(anchor: torch.Tensor, candidates: torch.Tensor, tau: float,
                  targets: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows r of −log[e^{cos(a_r, c_{t_r})/τ} / Σ_c e^{cos(a_r, c)/τ}].

    ``anchor`` (b, d): one view. ``candidates`` (m, d): the other view's vectors the denominator runs over.
    ``targets`` (b,): the row of ``candidates`` that is anchor r's positive; None: row r (``candidates`` is then
    the b positives themselves, in-batch negatives: the other rows' positives). All vectors are L2-normalized
    (cosine similarity). Computed as a cross-entropy over (a/τ)·cᵀ: τ scales the b anchors, not the b × m logits,
    and the fused log-softmax backward is the cheap one (~30% less time than logsumexp over a 2,900 × 8,317 table).
    """
    a = F.normalize(anchor, dim=-1) / tau
    c = F.normalize(candidates, dim=-1)
    if targets is None:
        targets = torch.arange(len(a), device=a.device)
    return F.cross_entropy(a @ c.T, targets)
