"""The conversational recommender contract: fit on training turns, score a batch of turns (task ``"crs"``).

CRS models are registered in the one model registry (:data:`lmrec.models.base.MODELS`) beside the CF models.
Models that read the conversation through the LLM (``uses_llm``) get their q vectors / generations from a
:class:`lmrec.models.crs.rta.features.ContextFeatures` (``self.context``): made from a prepared folder at fit time,
rebuilt from the run's LLM settings when a run folder is loaded (a new conversation is one LLM forward pass).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from lmrec.data.conversations import CRSData, CRSSample
from lmrec.errors import Argument, ArgumentError
from lmrec.models.base import Model, ModelConfig
from lmrec.train.trainer import TrainConfig, TrainLog

if TYPE_CHECKING:
    from lmrec.models.crs.rta.features import ContextFeatures, LLMFeatures


class CRSRecommender(Model, ABC):
    """Scores every catalog item for a conversation turn.

    ``fit`` may only use the TRAINING turns (and validation turns for selection / early stopping): those of
    ``features`` (a prepared subsample) when given, else every turn of ``data``. ``score`` returns
    (len(samples), n_items), higher is better. Evaluation is :func:`lmrec.eval.crs.evaluate_turns`.
    """

    task: ClassVar[str] = "crs"
    uses_llm: ClassVar[bool] = False  # reads the conversation through the LLM: fit needs features=
    # ranks from the LLM's generated answers: a run is evaluated on the prepared turns that have one (generating
    # the others would take seconds a turn)
    answers_by_generation: ClassVar[bool] = False
    base_model: ClassVar[str | None] = None  # the registered model whose fitted run fit needs as base=

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.n_items = 0
        self.context: ContextFeatures | None = None

    @abstractmethod
    def fit(self, data: CRSData, train: TrainConfig | dict | None = None, *, features: LLMFeatures | None = None,
            base: CRSRecommender | None = None, folder: Path | None = None, resume: bool = False) -> TrainLog | None:
        """Learn from the training turns; returns the training log (None when nothing is trained)."""

    @abstractmethod
    def score(self, samples: Sequence[CRSSample]) -> torch.Tensor:
        """(len(samples), n_items) scores."""

    def restore(self, state: dict[str, torch.Tensor], data: CRSData, context: ContextFeatures | None) -> None:
        """Rebuild a fitted model from its saved state (no training)."""
        self.n_items = len(data.catalog)
        self.context = context
        self.load_state(state)

    def q(self, samples: Sequence[CRSSample]) -> torch.Tensor:
        """(len(samples), d) LLM context vectors."""
        if self.context is None:
            raise ArgumentError(f"{self.name} needs LLM features: fit it with ", Argument("features"),
                                ", or load its run folder")
        return self.context.q([s.context for s in samples]).float().to(self.device)


def split_samples(data: CRSData, features: LLMFeatures | None, split: str) -> list[CRSSample]:
    """The turns of ``split`` a model learns from: the prepared subsample of ``features``, else all of ``data``."""
    if features is not None:
        return list(features.samples.get(split, []))
    return data.samples(split)

