"""InfoNCE between two views of the same nodes (graph contrastive learning, LM-CF alignment)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def view_info_nce(anchor: torch.Tensor, positive: torch.Tensor, tau: float,
                  candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows r of −log[e^{cos(a_r, p_r)/τ} / Σ_c e^{cos(a_r, c)/τ}].

    ``anchor``, ``positive``: (b, d), row r of one view paired with row r of the other. ``candidates``
    (m, d): the set the denominator runs over; it must contain each positive (e.g. all nodes of the
    second view, whose row for r's node is p_r). Default: ``positive`` itself (in-batch negatives: the
    other rows' positives). All vectors are L2-normalized first (cosine similarity).
    """
    a = F.normalize(anchor, dim=-1)
    p = F.normalize(positive, dim=-1)
    c = p if candidates is None else F.normalize(candidates, dim=-1)
    logits = a @ c.T / tau
    return (torch.logsumexp(logits, dim=1) - (a * p).sum(-1) / tau).mean()
