"""LM text inputs of the CF models (AlphaRec, linear mapping, KAR, RLMRec): item features from the catalog text,
user profiles as the mean of their TRAINING items' features, affine layers over those profiles (dense, or through
the items where that is cheaper), ``features=`` injection, and the features saved with the model (so a run folder
needs no encoder to load)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from lmrec.data.interactions import SplitData
from lmrec.errors import EmbeddingError
from lmrec.models.nn.graph import csr_tensor, sparse_product

# FLOPs of a dense fp32 product per byte a sparse product moves in the same time, on CPU (2-core Xeon, one thread:
# dense fp32 ~110 GFLOP/s; torch's CSR products of P and Pᵀ 5.5 GB/s on Amazon Games, 16 GB/s on ML-1M-sized data,
# bench/sparse_product.py)
DENSE_PER_SPARSE = 10


def profile_matrix(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """P = D⁻¹R: row u holds u's items weighted 1/|items of u| (an all-zero row for a user without items)."""
    counts = np.asarray(interactions.sum(axis=1)).ravel()
    scale = sp.diags(np.divide(1.0, counts, out=np.zeros_like(counts, dtype=np.float64), where=counts > 0))
    return sp.csr_matrix(scale @ interactions)


def user_profiles(interactions: sp.csr_matrix, item_features: np.ndarray) -> np.ndarray:
    """z_u = mean of the item features of u's items (a zero vector for a user without items): P z."""
    return np.asarray(profile_matrix(interactions) @ item_features, dtype=np.float32)


def users_via_items(n_users: int, n_items: int, nnz: int, d: int, items_at_hand: bool = True) -> bool:
    """Whether an affine layer over the users' mean inputs is cheaper through their items (:meth:`LMFeatures.
    users_affine`) than dense. Per output unit, the dense layer over the users costs 4·users·d FLOPs (forward and
    weight gradient); through the items it costs the two sparse products (P·X forward, Pᵀ·G backward), which move
    about 4·(2·nnz + users + items) bytes (a row of X read per non-zero, the output rows written), at
    :data:`DENSE_PER_SPARSE` FLOPs per byte, plus 4·items·d FLOPs for the layer over the items unless the model
    computes it anyway (``items_at_hand``: AlphaRec's one MLP for users and items). Amazon Games (50,546 users,
    173,545 edges, 384-d) and Industrial go through the items either way, MovieLens 100k / latest-small /
    ML-1M-sized data dense. The rule is fp32's in bf16 too: bf16's faster dense products would move the line toward
    the dense layer (on AMX Games sits at it), but the route depends on the data's shape only, so a run loads and
    resumes on the route it trained on, on any machine."""
    through_items = DENSE_PER_SPARSE * (2 * nnz + n_users + n_items) + (0 if items_at_hand else n_items * d)
    return n_users * d > through_items


def stacked(layers: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of the one layer whose outputs are the ``layers``' outputs side by side (a zero bias for a
    layer without one; None when none has one)."""
    weight = torch.cat([layer.weight for layer in layers])
    if all(layer.bias is None for layer in layers):
        return weight, None
    return weight, torch.cat([layer.weight.new_zeros(layer.out_features) if layer.bias is None else layer.bias
                              for layer in layers])


def affine_outputs(layers: Sequence[nn.Linear], x: torch.Tensor) -> list[torch.Tensor]:
    """[layer(x) for each layer], in one product with the layers' weights side by side."""
    return list(F.linear(x, *stacked(layers)).split([layer.out_features for layer in layers], dim=1))


def check_features(features: np.ndarray, data: SplitData) -> np.ndarray:
    """``features`` as float32 (n_items, d), all finite; errors name the shape or the first bad item."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] != data.n_items:
        raise EmbeddingError(f"item features have shape {features.shape}, expected ({data.n_items}, dim)")
    if not np.isfinite(features).all():
        bad = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise EmbeddingError(f"item features of item {data.catalog.ids[bad]!r} (row {bad}) are not finite")
    return features


class LMFeatures:
    """Mixin (put it before the Recommender base): ``features`` (n_items, d) given at construction, else encoded
    from ``config.text_fields`` with ``config.encoder`` through the embedding cache, on the model's device. The
    config must have ``encoder`` and ``text_fields``."""

    features: np.ndarray | None
    z_users: torch.Tensor
    z_items: torch.Tensor
    #: whether the model computes its users' first layer on every item anyway (:func:`users_via_items`)
    items_at_hand = False

    def __init__(self, config: Any = None, features: np.ndarray | None = None, **overrides: Any):
        super().__init__(config, **overrides)  # type: ignore[call-arg]
        self.features = features

    def item_features(self, data: SplitData) -> np.ndarray:
        if self.features is None:
            from lmrec.inputs.prepare import item_text_features

            self.features = item_text_features(data.catalog, self.config.encoder,  # type: ignore[attr-defined]
                                               self.config.text_fields, str(self.device))  # type: ignore[attr-defined]
        return check_features(self.features, data)

    def lm_inputs(self, data: SplitData) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_users (n_users, d), z_items (n_items, d)): z_u = mean of z_i over u's TRAINING items (0 if none),
        i.e. P z_items with P = :func:`profile_matrix`, which the model keeps for :meth:`users_affine`."""
        items = self.item_features(data)
        profile = profile_matrix(data.train)
        self.profile, self.profile_t = csr_tensor(profile), csr_tensor(profile.T)
        self.empty_users = torch.from_numpy(np.flatnonzero(np.diff(data.train.indptr) == 0))  # their z_u is 0
        self.users_via_items = users_via_items(data.n_users, data.n_items, data.train.nnz, items.shape[1],
                                               self.items_at_hand)
        return torch.from_numpy(np.asarray(profile @ items, dtype=np.float32)), torch.from_numpy(items)

    def users_affine(self, layers: Sequence[nn.Linear], of_items: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[layer(z_u) for each layer] over every user, in one product. With :attr:`users_via_items` (many users
        per edge) the layers run on the items only: W(P z) + b = P(W z + b) for a user with training items (P's
        row sums to 1), and b for one without (z_u = 0); equal up to float32 rounding, at the cost of a sparse
        product (in fp32 whatever the autocast: a sum) instead of a dense layer over the users. ``of_items``: the
        layers' outputs on z_items side by side, when the caller has them."""
        if not self.users_via_items:
            return affine_outputs(layers, self.z_users)
        weight, bias = stacked(layers)
        items = F.linear(self.z_items, weight, bias) if of_items is None else of_items
        users = sparse_product(self.profile, self.profile_t, items)
        if bias is not None and len(self.empty_users):
            users = users.index_add_(0, self.empty_users, bias.to(users.dtype).expand(len(self.empty_users), -1))
        return list(users.split([layer.out_features for layer in layers], dim=1))

    def artifacts(self) -> dict[str, torch.Tensor]:
        return {"features": torch.from_numpy(np.asarray(self.features, np.float32))}

    def restore(self, state: dict[str, Any], inputs: Any, data: SplitData) -> None:
        """Rebuild with the item features the run saved (``inputs.item_features``: its artifact)."""
        self.features = np.asarray(inputs.item_features, dtype=np.float32)
        super().restore(state, inputs, data)  # type: ignore[misc]
