"""InfoNCE between two views of the same nodes (graph contrastive learning, LM-CF alignment)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from lmrec.models.nn.graph import full_precision

#: exp(x − 1/τ) of a cosine logit x ∈ [−1/τ, 1/τ] stays a normal fp32 number down to e^−80; below that τ each row
#: is shifted by its own maximum instead
_FIXED_SHIFT_UP_TO = 80.0


class _ProductCrossEntropy(torch.autograd.Function):
    """mean_r [log Σ_c e^{a_r·c} − a_r·c_{t_r}] with one b × m table, E = e^{a·cᵀ − k}, computed in place and kept
    for the backward:

        ∂/∂a = (E c) / (b s) − c_t / b,   ∂/∂c = Eᵀ (a / (b s)) − Σ_{r: t_r = c} a_r / b,   s = E·1 (row sums).

    ``cross_entropy(a @ c.T)`` makes three b × m tables (logits, log-softmax, its gradient); at Games' 3,600 × 50,546
    users (RLMRec's alignment term) each is 0.7 GB (bench/view_nce.py). Float32 or float64, autocast off (both ways);
    not differentiable twice (torch raises on it where the incoming gradient depends on the inputs).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, c: torch.Tensor, targets: torch.Tensor, bound: float) -> torch.Tensor:
        table = a @ c.T
        if 2 * bound <= _FIXED_SHIFT_UP_TO:  # |a_r·c| ≤ bound: one shift for every row, no pass for the maxima
            shift = torch.full((len(a), 1), bound, dtype=table.dtype, device=table.device)
        else:
            shift = table.amax(dim=1, keepdim=True)
        table.sub_(shift).exp_()
        sums = table.sum(dim=1, keepdim=True)
        positive = (a * c[targets]).sum(dim=1)
        ctx.save_for_backward(a, c, targets, table, sums)
        return (shift.squeeze(1) + sums.log().squeeze(1) - positive).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        a, c, targets, table, sums = ctx.saved_tensors
        weight = grad.to(a.dtype) / len(a)
        with torch.autocast(a.device.type, enabled=False):
            grad_a = (table @ c) * (weight / sums) - weight * c[targets] if ctx.needs_input_grad[0] else None
            grad_c = None
            if ctx.needs_input_grad[1]:
                grad_c = (table.T @ (a * (weight / sums))).index_add_(0, targets, a * -weight)
        return grad_a, grad_c, None, None


def view_info_nce(anchor: torch.Tensor, candidates: torch.Tensor, tau: float,
                  targets: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows r of −log[e^{cos(a_r, c_{t_r})/τ} / Σ_c e^{cos(a_r, c)/τ}].

    ``anchor`` (b, d): one view. ``candidates`` (m, d): the other view's vectors the denominator runs over.
    ``targets`` (b,): the row of ``candidates`` that is anchor r's positive; None: row r (``candidates`` is then
    the b positives themselves, in-batch negatives: the other rows' positives). All vectors are L2-normalized
    (cosine similarity); τ scales the b anchors, not the b × m logits. The cross-entropy over (a/τ)·cᵀ runs in
    :class:`_ProductCrossEntropy`, which keeps one b × m table instead of three.
    """
    a = F.normalize(anchor, dim=-1) / tau
    c = F.normalize(candidates, dim=-1)
    if targets is None:
        targets = torch.arange(len(a), device=a.device)
    with torch.autocast(a.device.type, enabled=False):
        return _ProductCrossEntropy.apply(full_precision(a), full_precision(c), targets, 1 / tau)
