"""Popularity baseline for conversational recommendation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmrec.data.conversations import CRSData, training_mentions
from lmrec.errors import LmrecError
from lmrec.models.base import register
from lmrec.models.crs.base import CRSRecommender
from lmrec.models.queries import Conversations


@register("pop")
class CRSPopularity(CRSRecommender):
    """score(turn, i) = number of TRAINING turns that mention item i (:func:`training_mentions`) — the same
    ranking for every turn; items with equal counts are tied (the evaluator's tie policy handles them)."""

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.counts: torch.Tensor | None = None

    def fit(self, data: CRSData, train: Any = None, *, inputs: Any = None, folder: Path | None = None,
            resume: bool = False, on_validation: Any = None) -> None:
        self.n_items = len(data.catalog)
        self.counts = torch.from_numpy(training_mentions(data.train, self.n_items)).to(torch.float32)

    def score_conversations(self, query: Conversations) -> torch.Tensor:
        if self.counts is None:
            raise LmrecError("pop: call fit before score")
        return self.counts.expand(len(query.samples), -1)

    def state(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.counts = state["counts"]
