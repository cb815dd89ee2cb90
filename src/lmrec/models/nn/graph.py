"""LightGCN graph propagation over the user-item bipartite graph of the TRAINING split."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def normalized_adjacency(train: sp.csr_matrix) -> torch.Tensor:
    """Â = D^-½ A D^-½ for A = [[0, R], [Rᵀ, 0]] (users first, then items), no self-loops, as torch CSR.

    Nodes without edges get a zero row (their degree term is taken as 0, not inf).
    """
    n_users, n_items = train.shape
    r = sp.csr_matrix(train, dtype=np.float32)
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    return csr_tensor(sp.diags(inv_sqrt) @ adj @ sp.diags(inv_sqrt))


class _SparseProduct(torch.autograd.Function):
    """y = M x for a sparse M with its transpose Mᵀ at hand; the backward is Mᵀ g, as cheap as the forward. Float32
    whatever the autocast.

    (torch's generic backward for sparse CSR products is ~20x slower than the forward on CPU.)
    """

    @staticmethod
    def forward(ctx, m: torch.Tensor, m_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.m_t = m_t
        with torch.autocast(x.device.type, enabled=False):  # a sum: fp32 (torch has no bf16 CSR product on CPU)
            return m @ full_precision(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        with torch.autocast(grad.device.type, enabled=False):
            return None, None, ctx.m_t @ full_precision(grad)


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 when it is a 16-bit float (bf16 / fp16 from autocast), else unchanged (float32, float64)."""
    return x.to(torch.float32) if x.dtype in (torch.bfloat16, torch.float16) else x


def sparse_product(m: torch.Tensor, m_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """M x, differentiable in x; ``m_t`` is Mᵀ (the same tensor for a symmetric M)."""
    return _SparseProduct.apply(m, m_t, x)


def csr_tensor(matrix: sp.spmatrix) -> torch.Tensor:
    """A scipy sparse matrix as a torch CSR float32 tensor (indices sorted), with int32 indices while they fit
    (nnz < 2³¹; ~10% faster products than int64 on CPU: less index memory to stream), else int64."""
    m = sp.csr_matrix(matrix, dtype=np.float32)
    m.sort_indices()
    index = np.int32 if max(m.nnz, *m.shape) < np.iinfo(np.int32).max else np.int64
    return csr_from_parts(torch.from_numpy(m.indptr.astype(index)), torch.from_numpy(m.indices.astype(index)),
                          torch.from_numpy(m.data), m.shape)


def csr_from_parts(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A torch CSR tensor from its row pointers, column indices and values, not checked (the caller builds them)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products we use are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def propagate(adj: torch.Tensor, x: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN: mean of the layer outputs E⁽⁰⁾..E⁽ᴸ⁾ with E⁽ˡ⁺¹⁾ = Â E⁽ˡ⁾ (E⁽⁰⁾ = x; L = 0 returns x)."""
    total, layer = x, x
    for _ in range(n_layers):  # a running sum: no stack of L + 1 copies of the table to allocate and reduce
        layer = sparse_product(adj, adj, layer)  # Â is symmetric
        total = total + layer
    return total / (n_layers + 1)
