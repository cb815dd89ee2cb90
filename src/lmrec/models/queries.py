"""What a model is asked to score, as typed queries: one contract for collaborative filtering and conversational
recommendation (:meth:`lmrec.models.base.Model.score`).

- :class:`KnownUsers`: users the model was trained on (dense indices, a batch: what evaluation ranks), optionally
  with a stated intention mixed in (AlphaRec family);
- :class:`NewUser`: a user the model was not trained on, from the catalog items they have (titles are matched to
  items before, by :mod:`lmrec.data.titles`), optionally with an intention;
- :class:`Conversations`: conversation turns to recommend for (the context so far and the items it mentions).

Every query gives a (batch, n_items) score tensor, higher is better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lmrec.data.conversations import CRSSample


@dataclass(frozen=True)
class KnownUsers:
    """Training users by dense index (one row of scores each); ``intent`` / ``alpha``: a stated intention mixed
    into the user's representation with weight ``alpha`` (one user at a time)."""

    users: np.ndarray
    intent: str | None = None
    alpha: float = 0.5


@dataclass(frozen=True)
class NewUser:
    """One user the model was not trained on, from the catalog ``items`` (dense indices) they have."""

    items: tuple[int, ...]
    intent: str | None = None
    alpha: float = 0.5


@dataclass(frozen=True)
class Conversations:
    """Conversation turns to recommend for, one row of scores each."""

    samples: tuple[CRSSample, ...]


Query = KnownUsers | NewUser | Conversations
#: the name of each query kind, as models list what they answer and errors say it
KINDS = {KnownUsers: "known users", NewUser: "new users", Conversations: "conversations"}


def user_scorer(score: Callable[[Query], torch.Tensor]) -> Callable[[np.ndarray], torch.Tensor]:
    """A model's ``score`` as evaluation's scorer of known users: dense indices -> (batch, n_items); marked as
    giving fresh tensors (:func:`lmrec.eval.ranking.fresh_scores`) when the model's ``score_users`` is."""
    scorer = lambda users: score(KnownUsers(np.asarray(users)))  # noqa: E731
    hook = getattr(getattr(score, "__self__", None), "score_users", None)
    if getattr(hook, "fresh_scores", False):
        scorer.fresh_scores = True  # type: ignore[attr-defined]
    return scorer


def turn_scorer(score: Callable[[Query], torch.Tensor]) -> Callable[[Sequence[CRSSample]], torch.Tensor]:
    """A model's ``score`` as evaluation's scorer of conversation turns: samples -> (batch, n_items)."""
    return lambda samples: score(Conversations(tuple(samples)))
