"""Model inputs: what a model reads besides the interactions or conversations, prepared once, stored, identified
and looked up the same way for every model.

- LM item-text features (AlphaRec, the linear mapping, KAR, RLMRec): each item's text encoded by a text encoder
  (:func:`lmrec.inputs.prepare.item_text_features`), identified by the encoder and the text, kept in the embedding
  cache and, with a fitted model, in its run folder.
- LLM context features (the RTA models): the LLM's q vector and answer for each conversation turn and the catalog's
  title tokens (:func:`lmrec.inputs.prepare.prepare_features`, ``lmrec crs prepare``), identified by the LLM and
  the prepare settings, kept in a prepared folder (:mod:`lmrec.inputs.store`) and looked up, or computed for a new
  conversation, by :class:`lmrec.inputs.lookup.ContextFeatures`.

A model gets them as one :class:`ModelInputs` in ``fit`` and ``restore`` (:mod:`lmrec.models.base`).

Modules: ``config`` (settings), ``store`` (the prepared folder), ``prepare`` (making them), ``lookup`` (reading them
while evaluating and serving).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from lmrec.inputs.lookup import ContextFeatures
    from lmrec.inputs.store import LLMFeatures


@dataclass
class ModelInputs:
    """The inputs handed to a model's ``fit`` / ``restore``; each is None when not given.

    ``item_features``: (n_items, d) LM item-text features (saved with a fitted model and given back on restore);
    ``features``: a prepared LLM folder opened for the data (fit: the turns to learn from and their q / answers);
    ``context``: the q / completion lookup (restore, serving); ``base``: a fitted model the model builds on
    (``rta_adapt`` adapts an ``rta_reindex``)."""

    item_features: np.ndarray | None = None
    features: LLMFeatures | None = None
    context: ContextFeatures | None = None
    base: Any = None


__all__ = ["ModelInputs"]
