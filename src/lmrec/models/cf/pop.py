"""Most-popular baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmrec.data.interactions import SplitData
from lmrec.models.base import ModelConfig, Recommender, register
from lmrec.models.queries import KnownUsers, NewUser
from lmrec.settings import settings


@settings
class PopConfig(ModelConfig):
    pass


@register("pop")
class Popularity(Recommender):
    """score(u, i) = number of training users of item i — the same ranking for every user.

    Counts come from the training split only; items with equal counts are tied (the evaluator breaks
    ties at random).
    """

    Config = PopConfig

    def fit(self, data: SplitData, train: Any = None, *, inputs: Any = None, folder: Path | None = None,
            resume: bool = False, on_validation: Any = None) -> None:
        self.prepare(data)

    def score_new_user(self, query: NewUser) -> torch.Tensor:
        return self.counts[None].clone()

    def prepare(self, data: SplitData, seed: int = 0) -> None:
        super().prepare(data)
        self.counts = torch.from_numpy(data.item_popularity().astype(np.float32))

    def score_users(self, query: KnownUsers) -> torch.Tensor:
        return self.counts.expand(len(query.users), -1)

    def state(self) -> dict[str, Any]:
        return {"counts": self.counts}

    def load_state(self, state: dict[str, Any]) -> None:
        self.counts = state["counts"]
