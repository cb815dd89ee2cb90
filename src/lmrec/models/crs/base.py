"""The conversational recommender contract: fit on training samples, score a batch of samples."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import torch

from lmrec.data.conversations import CRSData, CRSSample
from lmrec.errors import LmrecError

_CRS_REGISTRY: dict[str, type[CRSRecommender]] = {}
C = TypeVar("C", bound="type[CRSRecommender]")


def register_crs(name: str) -> Callable[[C], C]:
    """Class decorator: make a conversational recommender available as ``get_crs_model(name)``."""

    def decorate(cls: C) -> C:
        cls.name = name
        _CRS_REGISTRY[name] = cls
        return cls

    return decorate


def get_crs_model(name: str) -> type[CRSRecommender]:
    import lmrec.models.crs  # noqa: F401  (registers the models)

    try:
        return _CRS_REGISTRY[name]
    except KeyError:
        raise LmrecError(f"unknown CRS model {name!r}: expected one of {', '.join(sorted(_CRS_REGISTRY))}") from None


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
