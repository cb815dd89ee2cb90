"""Top-K ranking metrics, per user, from a ranked hit matrix.

Every function takes ``hits`` of shape ``(n_users, K_max)``: ``hits[u, j]`` is 1 when the item ranked at
(0-based) position ``j`` for user ``u`` is one of the user's targets ``T_u``, and ``n_targets[u] = |T_u|``
(users with no targets must be removed before). They return one value per user; averaging and standard
errors live in :mod:`lmrec.eval.stats`.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def _check(hits: Array, k: int) -> Array:
    if k < 1 or k > hits.shape[1]:
        raise ValueError(f"K={k} must be in [1, {hits.shape[1]}] (the ranked list length)")
    return hits[:, :k].astype(np.float64)


def recall(hits: Array, n_targets: Array, k: int) -> Array:
    """Recall@K = |top-K ∩ T| / |T|  (denominator not capped at K, as in LightGCN/AlphaRec)."""
    return _check(hits, k).sum(axis=1) / n_targets


def precision(hits: Array, n_targets: Array, k: int) -> Array:
    """Precision@K = |top-K ∩ T| / K."""
    return _check(hits, k).sum(axis=1) / k


def hit_rate(hits: Array, n_targets: Array, k: int) -> Array:
    """HR@K = 1 if |top-K ∩ T| >= 1 else 0."""
    return (_check(hits, k).sum(axis=1) > 0).astype(np.float64)


def ndcg(hits: Array, n_targets: Array, k: int) -> Array:
    """NDCG@K = DCG/IDCG with binary gains: DCG = Σ_{j<K} hit_j / log2(j+2), IDCG = Σ_{j<min(|T|,K)} 1/log2(j+2)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = _check(hits, k) @ discounts
    ideal = np.cumsum(discounts)[np.minimum(n_targets, k).astype(np.int64) - 1]
    return dcg / ideal


def mrr(hits: Array, n_targets: Array, k: int) -> Array:
    """MRR@K = 1/(j+1) for the first hit at 0-based position j < K, else 0."""
    top = _check(hits, k)
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1), 0.0)


METRICS = {"recall": recall, "ndcg": ndcg, "hr": hit_rate, "mrr": mrr, "precision": precision}


def compute(hits: Array, n_targets: Array, metrics: tuple[str, ...], ks: tuple[int, ...]) -> dict[str, Array]:
    """``{"recall@20": per-user values, ...}`` for every metric and K."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: expected some of {sorted(METRICS)}")
    return {f"{m}@{k}": METRICS[m](hits, n_targets, k) for m in metrics for k in ks}
