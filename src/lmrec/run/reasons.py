"""Why an item is recommended: ``because``, ``intent`` and ``reason`` on every
:class:`~lmrec.run.run.Recommendation`, from :meth:`lmrec.Run.recommend` and the service alike.

- ``because``: up to :data:`N_BECAUSE` items of the user's history nearest to the recommended item in the model's
  item space (:meth:`lmrec.models.base.Model.item_space`: the item vectors of dot-product models, FISM's and
  SASRec's item embeddings, RTA's item table), by cosine, nearest first. The history is what the model read: a
  known user's training items, a new user's items, the items a conversation mentions.
- ``intent``: the stated intention, where it brought the item in: the item is in the top ``k`` with the intention
  and not in the top ``k`` of the same request without it.
- ``reason``: one sentence saying the above. A model without an item space (Pop, the CRS Pop, the zero-shot LLM)
  names no item: ``because`` is empty and ``reason`` says so rather than guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_BECAUSE = 3  # history items named per recommendation


@dataclass(frozen=True)
class Because:
    """A history item near a recommended one: its external id, title and cosine in the model's item space."""

    item_id: str
    title: str
    similarity: float


def nearest(space: np.ndarray, history: Sequence[int], items: Sequence[int], n: int = N_BECAUSE
            ) -> list[list[tuple[int, float]]]:
    """For each of ``items`` (dense indices into the rows of ``space``, (n_items, d)), up to ``n`` of ``history``
    as (index, cosine), highest cosine first (ties: the earlier history item); an item is never its own reason."""
    history = list(dict.fromkeys(int(h) for h in history))
    if not len(items) or not history:
        return [[] for _ in items]
    space = np.asarray(space, dtype=np.float32)
    unit = lambda rows: rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)  # noqa: E731
    cosine = unit(space[np.asarray(items, dtype=np.int64)]) @ unit(space[np.asarray(history)]).T  # (items, history)
    out = []
    for row, item in zip(cosine, items, strict=True):
        order = [j for j in np.argsort(-row, kind="stable") if history[j] != int(item)][:n]
        out.append([(history[j], float(row[j])) for j in order])
    return out


def reason(because: Sequence[Because], intent: str | None, *, has_space: bool, model: str,
           conversation: bool = False) -> str:
    """The sentence a person reads (module docstring): the intention that brought the item in, else the history
    items nearest to it, else why there are none."""
    if intent is not None:
        short = intent if len(intent) <= 80 else intent[:77] + "..."
        return f"for your intention \u201c{short}\u201d (not in the top without it)"
    if because:
        titles = [b.title for b in because]
        listed = titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " and " + titles[-1]
        return f"because you {'mentioned' if conversation else 'liked'} {listed}"
    if not has_space:
        return f"{model} has no item space to compare it with your {'conversation' if conversation else 'history'}"
    return "no catalog item mentioned yet" if conversation else "no history item to compare it with"
