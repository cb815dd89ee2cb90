"""Base of the gradient-trained recommenders: a torch module, the shared trainer, cached inference."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.data.interactions import SplitData
from lmrec.models.base import Recommender
from lmrec.train import TrainConfig, Trainer, TrainLog


class TorchRecommender(Recommender):
    """A recommender whose parameters live in ``self.net`` (built by :meth:`prepare`) and are fitted by
    :class:`lmrec.train.Trainer`. Subclasses implement :meth:`build`, :meth:`batches`, :meth:`loss` and
    :meth:`embed` (user and item representations used for scoring)."""

    net: torch.nn.Module

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._inference: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- to implement --------------------------------------------------------------------------------
    def build(self, data: SplitData) -> torch.nn.Module:
        raise NotImplementedError

    def batches(self, rng: np.random.Generator, batch_size: int) -> Iterator[Any]:
        raise NotImplementedError

    def loss(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def embed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user representations (n_users, d), item representations (n_items, d)); score = dot product."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------------
    def prepare(self, data: SplitData) -> None:
        super().prepare(data)
        torch.manual_seed(getattr(self.config, "seed", 0))
        self.net = self.build(data)
        self._inference = None

    def fit(self, data: SplitData, train_config: TrainConfig | dict | None = None,
            log_path: Path | None = None) -> TrainLog:
        self.prepare(data)
        return Trainer(self.resolve_train_config(train_config), log_path).fit(self, data)

    @classmethod
    def resolve_train_config(cls, overrides: TrainConfig | dict | None) -> TrainConfig:
        """The model's paper defaults (``train_defaults``) overridden by the given values."""
        if isinstance(overrides, TrainConfig):
            return overrides
        return TrainConfig.with_overrides(cls.train_defaults, overrides)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.net.parameters()

    def set_training(self, training: bool) -> None:
        self.net.train(training)
        self._inference = None

    def score(self, users: np.ndarray) -> torch.Tensor:
        if self._inference is None:
            with torch.no_grad():
                self._inference = tuple(t.detach() for t in self.embed())  # type: ignore[assignment]
        user_emb, item_emb = self._inference  # type: ignore[misc]
        return user_emb[torch.as_tensor(users, dtype=torch.long)] @ item_emb.T

    def state(self) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state)
        self.set_training(False)
