"""LM text inputs of the CF models (AlphaRec, linear mapping, KAR, RLMRec): item features from the catalog text,
user profiles as the mean of their TRAINING items' features, ``features=`` injection, and the features saved with
the model (so a run folder needs no encoder to load)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from lmrec.data.interactions import SplitData
from lmrec.errors import EmbeddingError


def profile_matrix(interactions: sp.csr_matrix) -> sp.csr_matrix:
    """P = D⁻¹R: row u holds u's items weighted 1/|items of u| (an all-zero row for a user without items)."""
    counts = np.asarray(interactions.sum(axis=1)).ravel()
    scale = sp.diags(np.divide(1.0, counts, out=np.zeros_like(counts, dtype=np.float64), where=counts > 0))
    return sp.csr_matrix(scale @ interactions)


def user_profiles(interactions: sp.csr_matrix, item_features: np.ndarray) -> np.ndarray:
    """z_u = mean of the item features of u's items (a zero vector for a user without items): P z."""
    return np.asarray(profile_matrix(interactions) @ item_features, dtype=np.float32)


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
        """(z_users (n_users, d), z_items (n_items, d)): z_u = mean of z_i over u's TRAINING items (0 if none)."""
        items = self.item_features(data)
        return torch.from_numpy(user_profiles(data.train, items)), torch.from_numpy(items)

    def artifacts(self) -> dict[str, torch.Tensor]:
        return {"features": torch.from_numpy(np.asarray(self.features, np.float32))}

    def restore(self, state: dict[str, Any], inputs: Any, data: SplitData) -> None:
        """Rebuild with the item features the run saved (``inputs.item_features``: its artifact)."""
        self.features = np.asarray(inputs.item_features, dtype=np.float32)
        super().restore(state, inputs, data)  # type: ignore[misc]
