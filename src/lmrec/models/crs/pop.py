"""Popularity baseline for conversational recommendation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmrec.data.conversations import CRSData, CRSSample, training_mentions
from lmrec.errors import LmrecError
from lmrec.models.crs.base import CRSRecommender, register_crs


@register_crs("pop")
class CRSPopularity(CRSRecommender):
    """score(turn, i) = number of TRAINING turns that mention item i (:func:`training_mentions`) — the same
    ranking for every turn; items with equal counts are tied (the evaluator's tie policy handles them)."""

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None

    def fit(self, data: CRSData, train: Sequence[CRSSample], valid: Sequence[CRSSample]) -> None:
        self.counts = torch.from_numpy(training_mentions(data.train, len(data.catalog))).to(torch.float32)

    def score(self, samples: Sequence[CRSSample]) -> torch.Tensor:
        if self.counts is None:
            raise LmrecError("pop: call fit before score")
        return self.counts.expand(len(samples), -1)
