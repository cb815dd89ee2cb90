"""Beyond-accuracy metrics of top-K lists: catalog coverage, novelty, average recommendation popularity (ARP),
long-tail share (APLT) and intra-list diversity (ILD).

Every function takes ``top`` of shape ``(n_users, K_max)``: ``top[u, j]`` is the item ranked at (0-based) position
``j`` for user ``u`` by the same full ranking as the accuracy metrics (same masking, same seeded tie policy; see
:mod:`lmrec.eval.ranking`), and uses its first K columns. Popularity and the head / tail split come from the
TRAINING split only: pop_i = the number of training users of item i, U_train = the users with at least one training
interaction. Coverage is one number for the catalog; the others are one value per user (averaged with an SE by
:mod:`lmrec.eval.stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

Array = np.ndarray

METRICS = ("coverage", "novelty", "arp", "aplt", "ild")
CATALOG_LEVEL = ("coverage",)  # one number for the whole catalog, not one per user
HEAD_SHARE = 0.2  # the head holds at least this share of the training interactions (Abdollahpouri et al. 2019)
DEFAULT_ENCODER = "minilm"  # what ILD encodes the titles with when the model has no LM item features


def _first(top: Array, k: int) -> Array:
    if k < 1 or k > top.shape[1]:
        raise ValueError(f"K={k} must be in [1, {top.shape[1]}] (the ranked list length)")
    return top[:, :k]


def item_popularity(train: sp.spmatrix) -> Array:
    """pop_i = the number of users with item i in ``train`` (distinct users: a repeated entry counts once)."""
    m = sp.csr_matrix(train, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    return np.bincount(m.indices, minlength=m.shape[1]).astype(np.int64)


def training_users(train: sp.spmatrix) -> int:
    """|U_train| = the number of users with at least one item in ``train``."""
    m = sp.csr_matrix(train)
    return int((np.diff(m.indptr) > 0).sum())


def long_tail(pop: Array, head_share: float = HEAD_SHARE) -> Array:
    """Boolean mask of the tail items. Head = ``{i : pop_i ≥ p*}``, ``p*`` = the largest popularity such that the items
    with pop ≥ ``p*`` hold at least ``head_share`` of the training interactions
    (``Σ_{pop_i ≥ p*} pop_i ≥ share · Σ_i pop_i``).
    This is the smallest set of most popular items holding that share, except that the items tied with the boundary
    item are all in the head (the rule depends on popularity only, never on item ids). The tail is the rest, always
    including the items no training user has (and every item when training is empty)."""
    pop = np.asarray(pop, dtype=np.int64)
    total = int(pop.sum())
    if total == 0:
        return np.ones(len(pop), dtype=bool)
    values, counts = np.unique(pop[pop > 0], return_counts=True)
    values, counts = values[::-1], counts[::-1]  # distinct popularities, most popular first
    held = np.cumsum(values * counts)  # interactions of the items with pop ≥ each value
    p_star = values[np.argmax(held >= head_share * total)]
    return pop < p_star


def coverage(top: Array, k: int, n_items: int) -> float:
    """Coverage@K = |∪_u top-K(u)| / n_items (catalog level: one number)."""
    return len(np.unique(_first(top, k))) / n_items


def novelty(top: Array, k: int, pop: Array, n_train_users: int) -> Array:
    """Novelty@K = (1/K) Σ_{i ∈ top-K(u)} −log2(pop_i / |U_train|), with pop_i = 1 for an item no training user has
    (so it counts as the rarest possible item, log2 |U_train| bits, and the value stays finite)."""
    if n_train_users < 1:
        raise ValueError("novelty needs at least one training user")
    bits = -np.log2(np.maximum(pop, 1) / n_train_users)
    return bits[_first(top, k)].mean(axis=1)


def arp(top: Array, k: int, pop: Array) -> Array:
    """ARP@K = (1/K) Σ_{i ∈ top-K(u)} pop_i (training popularity; 0 for an item no training user has)."""
    return pop[_first(top, k)].astype(np.float64).mean(axis=1)


def aplt(top: Array, k: int, tail: Array) -> Array:
    """APLT@K = |top-K(u) ∩ tail| / K (the tail of :func:`long_tail`)."""
    return tail[_first(top, k)].astype(np.float64).mean(axis=1)


def ild(top: Array, k: int, unit: Array, chunk: int = 1024) -> Array:
    """ILD@K = 2 / (K(K−1)) Σ_{a<b} (1 − cos(e_a, e_b)) over the pairs of top-K(u); ``unit`` holds the item
    embeddings as unit rows (:func:`check_embeddings`). Computed as 1 − (‖Σ e‖² − Σ ‖e‖²) / (K(K−1)). K ≥ 2."""
    items = _first(top, k)
    if k < 2:
        raise ValueError("ild@1 is undefined: a list of one item has no pair (use K ≥ 2)")
    out = np.empty(len(items))
    for start in range(0, len(items), chunk):
        e = unit[items[start : start + chunk]]  # (b, K, d)
        total = e.sum(axis=1)
        pairs = (total * total).sum(axis=1) - (e * e).sum(axis=(1, 2))  # Σ_{a≠b} cos(e_a, e_b)
        out[start : start + chunk] = 1.0 - pairs / (k * (k - 1))
    return out


def check_embeddings(embeddings: Any, n_items: int) -> Array:
    """The item embeddings as float64 unit rows (n_items, d); an error names what is missing or wrong."""
    if embeddings is None:
        raise ValueError("metric 'ild' needs the item-text embeddings: pass item_embeddings= (an (n_items, d) array)")
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] != n_items:
        raise ValueError(f"ild: item_embeddings have shape {e.shape}, expected ({n_items}, d)")
    norms = np.linalg.norm(e, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if len(bad):
        raise ValueError(f"ild: the embedding of item row {int(bad[0])} is zero or not finite (no cosine)")
    return e / norms[:, None]


def check(metrics: Sequence[str], ks: Sequence[int], n_items: int, embeddings: Any) -> Array | None:
    """Validate the request before anything is ranked; returns the unit embeddings when ILD is asked for."""
    if "ild" not in metrics:
        return None
    if min(ks) < 2:
        raise ValueError(f"ild@{min(ks)} is undefined: a list of one item has no pair (use K ≥ 2)")
    return check_embeddings(embeddings, n_items)


def compute(top: Array, metrics: Sequence[str], ks: Sequence[int], train: sp.spmatrix,
            unit: Array | None = None) -> tuple[dict[str, Array], dict[str, float]]:
    """(``{"novelty@20": per-user values, ...}``, ``{"coverage@20": value, ...}``) for every metric and K;
    popularity from ``train``, ILD over the unit embeddings ``unit``."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: expected some of {list(METRICS)}")
    if "ild" in metrics and unit is None:
        raise ValueError("metric 'ild' needs the item-text embeddings")
    pop = item_popularity(train)
    per_user: dict[str, Array] = {}
    catalog: dict[str, float] = {}
    for m in metrics:
        for k in ks:
            name = f"{m}@{k}"
            if m == "coverage":
                catalog[name] = coverage(top, k, train.shape[1])
            elif m == "novelty":
                per_user[name] = novelty(top, k, pop, training_users(train))
            elif m == "arp":
                per_user[name] = arp(top, k, pop)
            elif m == "aplt":
                per_user[name] = aplt(top, k, long_tail(pop))
            else:
                per_user[name] = ild(top, k, unit)
    return per_user, catalog


def item_text_embeddings(data: Any, model: Any = None, encoder: str = DEFAULT_ENCODER) -> Array:
    """The (n_items, d) item-text embeddings ILD uses: the LM item features ``model`` holds (AlphaRec, KAR, RLMRec
    save them with the run), else the catalog titles encoded with ``encoder`` through the embedding cache."""
    features = getattr(model, "features", None)
    if features is not None:
        return np.asarray(features, dtype=np.float32)
    from lmrec.text import encode_catalog, get_encoder

    return encode_catalog(data.catalog.text(("title",)), get_encoder(encoder), progress=False)
