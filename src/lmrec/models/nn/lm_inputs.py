"""LM text inputs for CF models, shared with AlphaRec: item features from the catalog text, user profiles as
the mean of their TRAINING items' features, ``features=`` injection, and features saved with the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lmrec.data.interactions import SplitData


class LMFeatures:
    """Mixin (put it before the Recommender base): ``features`` (n_items, d) given at construction, else
    encoded from ``config.text_fields`` with ``config.encoder`` exactly as :class:`AlphaRec` does (same
    checks, same embedding cache). The config must have ``encoder`` and ``text_fields``."""

    features: np.ndarray | None

    def __init__(self, config: Any = None, features: np.ndarray | None = None, **overrides: Any):
        super().__init__(config, **overrides)  # type: ignore[call-arg]
        self.features = features

    def item_features(self, data: SplitData) -> np.ndarray:
        from lmrec.models.cf.alpharec import AlphaRec  # lazy: lmrec.models.cf imports the models using this

        return AlphaRec.item_features(self, data)  # type: ignore[arg-type]

    def lm_inputs(self, data: SplitData) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_users (n_users, d), z_items (n_items, d)): z_u = mean of z_i over u's TRAINING items (0 if none)."""
        from lmrec.models.cf.alpharec import AlphaRec

        items = self.item_features(data)
        return torch.from_numpy(AlphaRec.user_features(data.train, items)), torch.from_numpy(items)

    def artifacts(self) -> dict[str, Any]:
        return {"features": torch.from_numpy(np.asarray(self.features, np.float32))}

    def restore(self, state: dict[str, Any], artifacts: dict[str, Any], data: SplitData) -> None:
        self.features = artifacts["features"].numpy()
        super().restore(state, artifacts, data)  # type: ignore[misc]
