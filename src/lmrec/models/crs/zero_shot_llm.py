"""Zero-shot LLM recommender: the LLM writes 20 titles, they are parsed and mapped onto the catalog, and ranked.

    score(turn, i) = m − p   if item i is the mapped title at position p (0-based) among the m mapped items
                   = 0        for every other item (all tied at the bottom: the evaluator's tie policy handles them)

So the first mapped title scores highest. Parsing is :func:`lmrec.llm.parse_completion` (first ``n_titles`` titles)
and mapping :func:`lmrec.llm.title_matcher` with ``title_match``: ``"fuzzy"`` (default; rapidfuzz ``fuzz.ratio`` ≥ 80
on normalized titles, a title too far from every catalog title stays unmapped) or ``"nearest"`` (the official
tools/2_entity_mapping.py: every title goes to the nearest catalog title by edit distance). Unlike the official
code, the turn's ground-truth labels are NOT consulted while mapping a test answer (that rule looks at the answer).
``mapped_share`` reports the share of parsed titles that mapped, over every turn scored so far.

``completions`` turns contexts into completions: usually
:meth:`lmrec.inputs.lookup.ContextFeatures.completions` (cached generations first, the LLM for the rest);
tests inject a fake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import PositiveInt

from lmrec.data.conversations import CRSData
from lmrec.errors import Argument, ArgumentError
from lmrec.llm.parsing import TitleMatch
from lmrec.models.base import ModelConfig, register
from lmrec.models.crs.base import CRSRecommender
from lmrec.models.queries import Conversations
from lmrec.settings import settings

__all__ = ["ZeroShotLLM", "positional_scores"]


def positional_scores(items: Sequence[int], n_items: int) -> torch.Tensor:
    """(n_items,) float32: ``len(items) − position`` for the listed items, 0 elsewhere (``items`` unique)."""
    scores = torch.zeros(n_items, dtype=torch.float32)
    if items:
        scores[torch.as_tensor(list(items), dtype=torch.long)] = torch.arange(len(items), 0, -1, dtype=torch.float32)
    return scores


@settings
class ZeroShotConfig(ModelConfig):
    n_titles: PositiveInt = 20  # titles of each completion considered
    title_match: TitleMatch = "fuzzy"  # "nearest": the official mapping (see the module docstring)


@register("zero_shot_llm")
class ZeroShotLLM(CRSRecommender):
    """Rank the catalog by the LLM's own generated list (see the module docstring).

    ``completions`` (contexts -> generated texts) defaults to the model's LLM context features
    (:meth:`ContextFeatures.completions`: cached generations first, the LLM for the rest); tests inject a fake.
    """

    uses_llm = True
    answers_by_generation = True
    Config = ZeroShotConfig

    def __init__(self, config: ZeroShotConfig | None = None,
                 completions: Callable[[Sequence[str]], list[str]] | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._completions = completions
        self.matcher: Any = None
        self.n_titles_seen = 0
        self.n_mapped = 0
        self.n_turns = 0

    def completions(self, contexts: Sequence[str]) -> list[str]:
        if self._completions is not None:
            return self._completions(contexts)
        if self.context is None:
            raise ArgumentError("zero_shot_llm needs LLM features: fit it with ", Argument("features"),
                                ", or load its run folder")
        return self.context.completions(contexts)

    def fit(self, data: CRSData, train: Any = None, *, inputs: Any = None, folder: Path | None = None,
            resume: bool = False, on_validation: Any = None) -> None:
        """Nothing to learn (zero-shot): keeps the catalog (for the title matcher) and the LLM features."""
        features = inputs.features if inputs is not None else None
        if features is not None:
            from lmrec.inputs.lookup import context_features

            self.context = context_features(features)
        self._catalog(data)

    def restore(self, state: dict[str, torch.Tensor], inputs: Any, data: CRSData) -> None:
        super().restore(state, inputs, data)
        self._catalog(data)

    def _catalog(self, data: CRSData) -> None:
        from lmrec.llm import title_matcher

        self.n_items = len(data.catalog)
        self.matcher = title_matcher(data.catalog.titles, self.config.title_match)

    def rank_items(self, contexts: Sequence[str]) -> list[list[int]]:
        """The mapped catalog items of each context's completion, in generated order."""
        from lmrec.inputs.prepare import map_completion

        out = []
        for text in self.completions(list(contexts)):
            titles, items, n_mapped = map_completion(text, self.matcher, self.config.n_titles)
            self.n_titles_seen += len(titles)
            self.n_mapped += n_mapped
            self.n_turns += 1
            out.append(items)
        return out

    def score_conversations(self, query: Conversations) -> torch.Tensor:
        ranked = self.rank_items([s.context for s in query.samples])
        if not ranked:
            return torch.zeros(0, self.n_items)
        return torch.stack([positional_scores(items, self.n_items) for items in ranked])

    @property
    def mapped_share(self) -> float:
        """Share of parsed titles (over all turns scored so far) that mapped to a catalog item."""
        return self.n_mapped / self.n_titles_seen if self.n_titles_seen else 0.0

    def stats(self) -> dict[str, float]:
        turns = max(self.n_turns, 1)
        return {"turns": self.n_turns, "titles_per_turn": self.n_titles_seen / turns,
                "mapped_share": self.mapped_share, "mapped_per_turn": self.n_mapped / turns}
