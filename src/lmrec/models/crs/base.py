"""The conversational recommender contract: fit on training samples, score a batch of samples."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from lmrec.data.conversations import CRSData, CRSSample
from lmrec.registry import Registry

CRS_MODELS: Registry[type[CRSRecommender]] = Registry("CRS model", "lmrec.models.crs")
register_crs = CRS_MODELS.register
get_crs_model = CRS_MODELS.get


class CRSRecommender(ABC):
    """Scores every catalog item for a conversation turn.

    ``fit`` may only use the TRAINING samples (and validation samples for selection / early stopping);
    ``score`` returns (len(samples), n_items), higher is better. Evaluation is :func:`lmrec.eval.crs.evaluate_crs`.
    """

    name: ClassVar[str] = "crs"

    @abstractmethod
    def fit(self, data: CRSData, train: Sequence[CRSSample], valid: Sequence[CRSSample]) -> Any:
        """Learn from ``train`` (select on ``valid``); returns a log or None."""

    @abstractmethod
    def score(self, samples: Sequence[CRSSample]) -> torch.Tensor:
        """(len(samples), n_items) scores."""
