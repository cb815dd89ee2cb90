"""Conversational models on the one model contract (:mod:`lmrec.models.base`): they learn from conversation turns
and answer conversations. Registered in the one registry beside the CF models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from lmrec.data.conversations import CRSData, CRSSample
from lmrec.errors import LmrecError
from lmrec.inputs import ModelInputs
from lmrec.models.base import Model, ModelConfig

if TYPE_CHECKING:
    from lmrec.inputs.lookup import ContextFeatures
    from lmrec.inputs.store import LLMFeatures


class CRSRecommender(Model):
    """A conversational model (task ``"crs"``): it learns from the turns of a :class:`CRSData` and answers
    conversations (:class:`~lmrec.models.queries.Conversations`, one row of scores per turn).

    ``fit`` may only use the TRAINING turns (and validation turns for selection / early stopping): those of the
    prepared folder ``inputs.features`` (a prepared subsample) when given, else every turn of ``data``. Models that
    read the conversation through the LLM (``uses_llm``) get their q vectors / generations from ``self.context``
    (:class:`lmrec.inputs.lookup.ContextFeatures`): made from the prepared folder at fit time, given back as
    ``inputs.context`` on restore (a new conversation is one LLM forward pass).
    """

    task: ClassVar[str] = "crs"
    uses_llm: ClassVar[bool] = False  # reads the conversation through the LLM: fit needs inputs.features
    # ranks from the LLM's generated answers: a run is evaluated on the prepared turns that have one (generating
    # the others would take seconds a turn)
    answers_by_generation: ClassVar[bool] = False

    def __init__(self, config: ModelConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.n_items = 0
        self.context: ContextFeatures | None = None

    def restore(self, state: dict[str, torch.Tensor], inputs: ModelInputs, data: CRSData) -> None:
        """Rebuild a fitted model from its saved state (no training)."""
        self.n_items = len(data.catalog)
        self.context = inputs.context
        self.load_state(state)

    def q(self, samples: Sequence[CRSSample]) -> torch.Tensor:
        """(len(samples), d) LLM context vectors (a sample's ``conv_id`` names its conversation for the KV cache the
        context may keep per conversation: :meth:`lmrec.inputs.lookup.ContextFeatures.keep_kv`)."""
        if self.context is None:
            raise LmrecError(f"{self.name} needs LLM features: fit it with features=..., or load its run folder")
        keys = [s.conv_id for s in samples] if getattr(self.context, "kv", None) is not None else None
        return self.context.q([s.context for s in samples], keys=keys).float().to(self.device)


def split_samples(data: CRSData, features: LLMFeatures | None, split: str) -> list[CRSSample]:
    """The turns of ``split`` a model learns from: the prepared subsample of ``features``, else all of ``data``."""
    if features is not None:
        return list(features.samples.get(split, []))
    return data.samples(split)

