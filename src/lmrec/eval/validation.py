"""The validation the trainer runs every ``eval_every`` epochs to select the state and stop early, one per task:
full ranking of the VALIDATION users (train items masked) or of the VALIDATION turns; the test split is never read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from lmrec.data.conversations import CRSSample
from lmrec.data.interactions import SplitData
from lmrec.errors import Argument, ArgumentError
from lmrec.train import TrainConfig, distributed

Validate = Callable[[], dict[str, float]]


def user_validation(scorer: Callable[[np.ndarray], torch.Tensor], data: SplitData, cfg: TrainConfig) -> Validate:
    """``data.valid`` ranked over the full catalog (train items masked, users without training items left out) at
    the selection metric and @20 (recall, NDCG, HR), ties broken with the run's seed."""
    from lmrec.eval.ranking import evaluate

    def validate() -> dict[str, float]:
        result = evaluate(scorer, data, "valid", ks=sorted({cfg.metric_k, min(20, data.n_items)}),
                          batch_size=cfg.eval_batch_size, seed=cfg.seed,
                          metrics=tuple(dict.fromkeys((cfg.metric_name, "recall", "ndcg", "hr"))),
                          cold_users="exclude", world=distributed.current())
        return {name: est.mean for name, est in result.summary().items()}

    return validate


def turn_validation(scorer: Callable[[Sequence[CRSSample]], torch.Tensor], samples: Sequence[CRSSample],
                    n_items: int, cfg: TrainConfig) -> Validate | None:
    """The validation turns ranked over the full catalog, one (turn, target) pair per target, at the selection
    metric (HR@K or NDCG@K); None when there are no validation turns (the trainer then keeps the last state)."""
    from lmrec.eval.crs import evaluate_crs

    if cfg.metric_name not in ("hr", "ndcg"):
        raise ArgumentError(Argument("metric", cfg.metric), ": conversational models select on hr@K or ndcg@K")
    if not samples:
        return None

    def validate() -> dict[str, float]:
        result = evaluate_crs(scorer, samples, n_items, ks=(cfg.metric_k,), batch_size=cfg.eval_batch_size)
        return {name: est.mean for name, est in result.summary().items()}

    return validate
