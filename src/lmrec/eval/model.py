"""A fitted model evaluated on a split of its data, by the data's protocol: users ranked over the full catalog for
interaction data (:func:`lmrec.eval.ranking.evaluate`), conversation turns for conversational data
(:func:`lmrec.eval.crs.evaluate_turns`). The one place that knows which protocol goes with which data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmrec.data.conversations import CRSData, CRSSample
from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.eval import ranking
from lmrec.eval.ranking import NothingToEvaluate
from lmrec.models.queries import turn_scorer, user_scorer

REPORT_KS = (10, 20)
REPORT_METRICS = ("recall", "ndcg", "hr", "mrr")
# beyond accuracy, in every CF run's test metrics (lmrec.eval.beyond; ILD needs text embeddings: on request only)
REPORT_BEYOND = ("coverage", "novelty", "arp", "aplt")
CRS_KS = (1, 5, 10, 50)


def evaluate_model(model: Any, data: SplitData | CRSData, split: str, ks: Sequence[int] | None = None,
                   metrics: Sequence[str] | None = None, batch_size: int = 1024, seed: int = 0) -> Any:
    """Full-catalog evaluation of ``split``. Interactions: a :class:`~lmrec.eval.ranking.RankingResult`
    (``metrics``, default recall, NDCG, HR, MRR, @ ``ks``; train (+ valid) items masked; users without training
    interactions left out and counted; ``ild`` over the model's LM item features, else the titles encoded with the
    default text encoder through the embedding cache; ties broken with ``seed``). Conversations:
    ``{"all": CRSResult, "new": CRSResult}`` over the turns the model is evaluated on (:func:`evaluation_turns`;
    HR / NDCG / MRR @ ``ks``, expected ties; ``metrics`` does not apply)."""
    if isinstance(data, SplitData):
        from lmrec.eval.beyond import item_text_embeddings

        ks = tuple(sorted({min(k, data.n_items) for k in (ks or REPORT_KS)}))
        metrics = tuple(metrics or REPORT_METRICS)
        embeddings = item_text_embeddings(data, model) if "ild" in metrics else None
        return ranking.evaluate(user_scorer(model.score), data, split, ks=ks, metrics=metrics, batch_size=batch_size,
                        seed=seed, cold_users="exclude", item_embeddings=embeddings)
    if metrics is not None:
        raise LmrecError(f"{model.name} is a conversational model, evaluated on HR / NDCG / MRR per turn: choosing "
                         "metrics applies to CF runs only")
    from lmrec.eval.crs import evaluate_turns

    samples = evaluation_turns(model, data, split)
    if not samples:
        answered = " that prepare answered" if getattr(model, "answers_by_generation", False) else ""
        raise NothingToEvaluate(f"{data.name}: no {split} turns{answered} with a recommendation to evaluate")
    return evaluate_turns(turn_scorer(model.score), samples, len(data.catalog), ks=tuple(ks or CRS_KS))


def test_metrics(data: SplitData | CRSData) -> tuple[str, ...] | None:
    """The metrics a fitted run reports on test: accuracy and beyond accuracy for interactions, the protocol's own
    for conversations (None)."""
    return REPORT_METRICS + REPORT_BEYOND if isinstance(data, SplitData) else None


def evaluation_turns(model: Any, data: CRSData, split: str) -> list[CRSSample]:
    """The turns a conversational model is evaluated on: its prepared turns when it has LLM features (for a model
    that answers by generation, those the LLM answered in prepare), else all of them."""
    context = getattr(model, "context", None)
    prepared = getattr(context, "samples", None)
    if prepared and split in prepared:
        if getattr(model, "answers_by_generation", False):
            return [s for s in prepared[split] if s.context in context.completion_table]
        return list(prepared[split])
    return data.samples(split)
