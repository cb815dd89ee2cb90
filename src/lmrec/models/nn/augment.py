"""Graph augmentations for contrastive CF: edge dropout (SGL-ED) and per-layer noise (SimGCL / XSimGCL)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from lmrec.models.nn.graph import sparse_product


def edge_dropout(train: sp.csr_matrix, ratio: float, rng: np.random.Generator) -> sp.csr_matrix:
    """A subgraph of the TRAINING matrix keeping ⌊nnz·(1 − ratio)⌋ of its edges, drawn without replacement
    (SGL-ED's ``randint_choice(nnz, size=int(nnz * (1 - ratio)), replace=False)``). Same shape, binary."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"edge dropout ratio must be in [0, 1), got {ratio}")
    coo = train.tocoo()
    keep = np.sort(rng.choice(coo.nnz, size=int(coo.nnz * (1.0 - ratio)), replace=False))
    data = np.ones(len(keep), dtype=np.float32)
    return sp.csr_matrix((data, (coo.row[keep], coo.col[keep])), shape=train.shape)


def uniform_noise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """SimGCL's perturbation Δ = eps · sign(x) ⊙ normalize(U(0, 1)) (row-wise L2), so ‖Δ‖ = eps per row
    and Δ stays in x's orthant."""
    return eps * torch.sign(x) * F.normalize(torch.rand_like(x), dim=-1)


def propagate_layers(adj: torch.Tensor, x: torch.Tensor, n_layers: int, eps: float = 0.0) -> list[torch.Tensor]:
    """[E⁽¹⁾, …, E⁽ᴸ⁾] with E⁽ˡ⁺¹⁾ = Â E⁽ˡ⁾ (+ :func:`uniform_noise` when ``eps`` > 0), E⁽⁰⁾ = x (not returned).

    Uses the symmetric sparse product of :mod:`lmrec.models.nn.graph` (cheap backward)."""
    layers, h = [], x
    for _ in range(n_layers):
        h = sparse_product(adj, adj, h)
        if eps > 0:
            h = h + uniform_noise(h, eps)
        layers.append(h)
    return layers
