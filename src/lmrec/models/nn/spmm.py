"""Sparse (CSR) times dense, differentiable in the dense operand, with the kernel chosen by the matrix's shape.

torch's CPU CSR product pays a fixed cost per output row that grows with the width: on matrices with short rows
(a few non-zeros each, e.g. AlphaRec's users through their items' means on Amazon data, 3.4 items per user) and
hundreds of columns, scipy's sparsetools kernel (``csr @ dense``) is 2-3x faster; on long rows (MovieLens, 80+
items per user) torch's is faster (``bench/sparse_product.py``). :class:`SparseMatrix` takes scipy's kernel on CPU
for rows shorter than :data:`SHORT_ROWS` non-zeros on average, torch's otherwise (and on GPUs). scipy's kernel
releases the GIL, so row blocks of equal non-zeros run on torch's thread count. Float32 in and out (products run
outside autocast: sums stay fp32); the kernels agree to float32 rounding.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from lmrec.models.nn.graph import csr_tensor, full_precision

try:  # the kernel scipy's own ``csr @ dense`` calls; writing into a slice of one output needs it directly
    from scipy.sparse._sparsetools import csr_matvecs
except ImportError:  # pragma: no cover - a scipy without it: the public product, block results copied
    csr_matvecs = None

SHORT_ROWS = 12  # mean non-zeros per row below which scipy's kernel is the faster one (bench/sparse_product.py)
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="lmrec-spmm")
    return _POOL


class ScipyCSR:
    """A float32 CSR matrix for products ``matmul(x)`` with dense float32 CPU tensors, on ``threads`` threads
    (default: torch's intra-op thread count at each call)."""

    def __init__(self, matrix: sp.spmatrix, threads: int | None = None):
        m = sp.csr_matrix(matrix, dtype=np.float32)
        m.sort_indices()
        index = np.int32 if max(m.nnz, *m.shape) < np.iinfo(np.int32).max else np.int64
        self.indptr, self.indices = m.indptr.astype(index), m.indices.astype(index)
        self.data = np.ascontiguousarray(m.data, dtype=np.float32)
        self.shape: tuple[int, int] = m.shape
        self.nnz = m.nnz
        self.threads = threads

    def blocks(self, n: int) -> list[tuple[int, int]]:
        """``n`` contiguous row ranges [lo, hi) holding about equal numbers of non-zeros (empty ranges dropped)."""
        bounds = np.searchsorted(self.indptr, np.linspace(0, self.nnz, n + 1)[1:-1]).tolist()
        edges = [0, *bounds, self.shape[0]]
        return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``self @ x`` for a (cols, d) CPU tensor (float32; anything else is converted), as a new (rows, d)
        float32 tensor."""
        if x.shape[0] != self.shape[1]:
            raise ValueError(f"cannot multiply a {self.shape} matrix by {tuple(x.shape)}")
        xs = np.ascontiguousarray(x.detach().to(torch.float32).numpy())
        d = xs.shape[1]
        out = np.zeros((self.shape[0], d), dtype=np.float32)
        threads = self.threads or torch.get_num_threads()
        blocks = self.blocks(threads if self.nnz * d > 1 << 20 else 1)  # small products: threads cost more
        if csr_matvecs is None:  # pragma: no cover
            m = sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)
            run = lambda lo, hi: out.__setitem__(slice(lo, hi), m[lo:hi] @ xs)  # noqa: E731
        else:  # the block's slice of indptr indexes the whole indices / data: nothing is copied
            run = lambda lo, hi: csr_matvecs(hi - lo, self.shape[1], d, self.indptr[lo : hi + 1],  # noqa: E731
                                             self.indices, self.data, xs.ravel(), out[lo:hi].ravel())
        if len(blocks) == 1:
            run(*blocks[0])
        else:
            for future in [_pool().submit(run, lo, hi) for lo, hi in blocks]:
                future.result()
        return torch.from_numpy(out)


class SparseMatrix:
    """A fixed sparse matrix M for products M·x with dense tensors (see :func:`product` for gradients).

    ``kernel="auto"``: scipy's kernel on CPU when M's rows hold fewer than :data:`SHORT_ROWS` non-zeros on average,
    torch's CSR product otherwise and on other devices; ``"torch"`` / ``"scipy"`` force one (scipy: CPU only)."""

    def __init__(self, matrix: sp.spmatrix, kernel: Literal["auto", "torch", "scipy"] = "auto"):
        m = sp.csr_matrix(matrix, dtype=np.float32)
        self.shape: tuple[int, int] = m.shape
        self.tensor = csr_tensor(m)
        short = m.nnz < SHORT_ROWS * max(m.shape[0], 1)
        self.scipy = ScipyCSR(m) if kernel == "scipy" or (kernel == "auto" and short) else None

    @property
    def kernel(self) -> str:
        """The kernel products on CPU take: "scipy" or "torch"."""
        return "torch" if self.scipy is None else "scipy"

    def to(self, device: torch.device | str) -> SparseMatrix:
        """The same matrix with its torch tensor on ``device`` (scipy's kernel serves CPU tensors only)."""
        moved = copy.copy(self)
        moved.tensor = self.tensor.to(device)
        return moved

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """M x for ``x`` (cols, d), not differentiable (see :func:`product`): float32 for 16-bit or float32 input
        (float64 stays float64 on torch's kernel; scipy's computes in float32)."""
        if self.scipy is not None and x.device.type == "cpu":
            return self.scipy.matmul(x)
        with torch.autocast(x.device.type, enabled=False):  # torch has no bf16 CSR product on CPU; sums in fp32
            return self.tensor @ full_precision(x)


class _Product(torch.autograd.Function):
    """y = M x; the backward is Mᵀ g with Mᵀ given, as cheap as the forward (torch's generic backward of a CSR
    product is ~20x slower than the forward on CPU)."""

    @staticmethod
    def forward(ctx, m: SparseMatrix, m_t: SparseMatrix, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.m_t = m_t
        return m.matmul(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return None, None, ctx.m_t.matmul(grad)


def product(m: SparseMatrix, m_t: SparseMatrix, x: torch.Tensor) -> torch.Tensor:
    """M x as float32, differentiable in ``x``; ``m_t`` is Mᵀ."""
    return _Product.apply(m, m_t, x)
