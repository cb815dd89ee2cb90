"""Training losses, each with its formula."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from lmrec.models.nn.graph import csr_from_parts, full_precision


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


#: rows whose item gradients (g[r, j]·u_r, (c, n, d)) are added at a time by :func:`row_scores`' backward
ROW_CHUNK_BYTES = 4 << 20


class _RowScores(torch.autograd.Function):
    """s[r, j] = u_r · e_{index[r, j]} through a sparse (b, n_items) matrix S with row r's entries at index[r]
    (duplicates add up, as the dense form's scatter does):

        s = S ⊙ (u·Eᵀ) (torch.sparse.sampled_addmm),   ∂/∂u = G E,   ∂/∂e_i = Σ_{(r, j): index[r, j] = i} g[r, j] u_r,

    with G = S carrying the incoming gradient g; the last is an index_add_ over chunks of rows. CPU, float32 or
    float64, autocast off (both ways); not differentiable twice (torch raises on it where the incoming gradient
    depends on the inputs).
    """

    @staticmethod
    def forward(ctx, users: torch.Tensor, items: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        pattern = _rows_matrix(index, users.new_zeros(index.numel()), len(items))
        ctx.save_for_backward(users, items, index)
        return torch.sparse.sampled_addmm(pattern, users, items.T).values().reshape(index.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        users, items, index = ctx.saved_tensors
        grad = grad.to(users.dtype)
        grad_users = grad_items = None
        with torch.autocast(users.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_users = _rows_matrix(index, grad.reshape(-1), len(items)) @ items
            if ctx.needs_input_grad[1]:
                grad_items = torch.zeros_like(items)
                chunk = max(1, ROW_CHUNK_BYTES // max(1, index.shape[1] * items.shape[1] * items.element_size()))
                for start in range(0, len(index), chunk):
                    rows = slice(start, start + chunk)
                    products = (grad[rows, :, None] * users[rows, None, :]).flatten(0, 1)  # (c·n, d)
                    grad_items.index_add_(0, index[rows].reshape(-1), products)
        return grad_users, grad_items, None


def _rows_matrix(index: torch.Tensor, values: torch.Tensor, n_columns: int) -> torch.Tensor:
    """The (b, n_columns) CSR matrix with row r's n entries at columns index[r] (unsorted, repeats allowed)."""
    b, n = index.shape
    return csr_from_parts(torch.arange(0, b * n + 1, n, device=index.device), index.reshape(-1), values.contiguous(),
                          (b, n_columns))


def row_scores(users: torch.Tensor, items: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(b, n) scores s[r, j] = users_r · items_{index[r, j]}: each row's own sampled items (``users`` (b, d),
    ``items`` (n_items, d), ``index`` (b, n)), without the b × n_items score table of gather(u·Eᵀ, index) (whose
    backward zero-fills and reads that table again: 0.28 GB on Games) or a b × n × d one (bench/row_scores.py).
    Gathered from the table instead where that form is the one to use: with more draws a row than items (tiny
    catalogs) the table is the smaller, and the sparse matrix could not hold them (torch keeps at most b × n_items
    entries); off the CPU, where sparse kernels do not promise anything for the matrix's repeated, unsorted
    entries (cuSPARSE's CSR has each entry once)."""
    if index.shape[1] > len(items) or users.device.type != "cpu":
        return torch.gather(users @ items.T, 1, index)
    with torch.autocast(users.device.type, enabled=False):
        return _RowScores.apply(full_precision(users), full_precision(items), index)


def sampled_softmax(pos: torch.Tensor, neg: torch.Tensor, collisions: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy over [the positive, sampled negatives] = mean over the batch of
    −log[e^{s⁺} / (e^{s⁺} + Σⱼ e^{s⁻ⱼ})] (:func:`info_nce` at τ = 1). ``pos``: (b,), ``neg``: (b, n); ``collisions``
    (b, n) true where a negative is the row's positive itself: left out of that row."""
    return info_nce(pos, neg, 1.0, None if collisions is None else ~collisions)


def sample_negatives(n_items: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``min(n, n_items)`` distinct items drawn uniformly (without replacement) from ``range(n_items)``."""
    return torch.randperm(n_items, generator=generator)[: min(n, n_items)]
