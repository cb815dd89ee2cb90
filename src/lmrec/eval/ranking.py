"""Batched full ranking with explicit masking and a stated tie policy.

Tie policy: items with equal scores are ordered by a random item priority drawn once per evaluation
from ``seed``. Ties are therefore broken uniformly at random, independently of item ids and of the batch
size, and a constant scorer scores at random level. Implementation: one int64 key per item, the float32
score's order-preserving bits in the high half and the priority's rank in the low half.

Masking: for the test split the user's train and valid items are removed from the ranking (for valid,
the train items), except items that are themselves targets. The masked splits are recorded in the result.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.eval import beyond as B
from lmrec.eval import metrics as M
from lmrec.eval.stats import Estimate, summarize
from lmrec.train.distributed import World

Scorer = Callable[[np.ndarray], torch.Tensor]  # dense user indices (b,) -> scores (b, n_items)
ScorerT = TypeVar("ScorerT", bound=Callable)

DEFAULT_MASK = {"valid": ("train",), "test": ("train", "valid"), "train": ()}
TIE_POLICY = "random (seeded item priority, batch-size invariant)"


@dataclass
class RankingResult:
    """Per-user metric values of one evaluation, and how it was made. ``catalog``: the catalog-level metrics
    (coverage@K), one number each, reported with n = the users evaluated and no SE (NaN in :meth:`summary`,
    None in :meth:`to_dict`)."""

    split: str
    users: np.ndarray  # dense indices of the evaluated users (those with >= 1 target)
    per_user: dict[str, np.ndarray]
    protocol: dict[str, object] = field(default_factory=dict)
    catalog: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Estimate]:
        n = len(self.users)
        return {**summarize(self.per_user), **{name: Estimate(v, math.nan, n) for name, v in self.catalog.items()}}

    def to_dict(self) -> dict[str, dict[str, float | int | None]]:
        """``{"recall@20": {"mean": m, "se": s, "n": n}, ..., "coverage@20": {"mean": c, "se": None, "n": n}}``."""
        out: dict[str, dict[str, float | int | None]] = {name: est.as_dict() for name, est in self.summary().items()}
        for name in self.catalog:
            out[name]["se"] = None
        return out


MASKED_KEY = torch.iinfo(torch.int64).min  # the key of an item removed from the ranking


class NothingToEvaluate(LmrecError):
    """A split with no user (turn) to score: an empty split, or only users without training interactions."""


def tie_break_keys(scores: torch.Tensor, priority: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering like ``scores`` (as float32), ties ordered by ``priority`` (higher first).

    key = (order-preserving int of the float32 score) · 2³² + rank of the item's priority: exact, no float
    arithmetic, and ±inf keep their place.
    """
    bits = (scores.to(torch.float32) + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into +0.0
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: reverse their bit order
    rank = torch.argsort(torch.argsort(priority, dim=-1), dim=-1).to(torch.int64)
    return (ordered << 32) | rank


CHUNK = 32  # entries per chunk of :func:`largest`'s first stage
_POOL: ThreadPoolExecutor | None = None  # the threads of _positions


def largest(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices), each (b, k), of the k largest entries of every row of a (b, n) float tensor, values
    descending (as ``torch.topk``; which of several equal values come, and in which order, is unspecified). NaN
    counts as larger than any number, as in ``torch.topk`` and numpy: a row with a NaN has one among its values.

    Wide rows on CPU in two stages: each row's chunks of :data:`CHUNK` entries by their maximum (one vectorised pass),
    then the k largest among the entries of the k chunks with the largest maxima and of the last, shorter chunk.
    They hold the row's k largest values: every entry above the k-th largest chunk maximum t lies in a chunk whose
    maximum exceeds t (all taken), and the k chunks taken hold at least k entries ≥ t. That is ~5x fewer entries to
    select from, and the selections run in numpy (``argpartition``), whose fixed cost per row is a third of
    ``torch.topk``'s (tests/eval/test_ranking.py checks the equality)."""
    b, n = scores.shape
    c = n // CHUNK
    if scores.device.type != "cpu" or c < 4 * k:
        return torch.topk(scores, k, dim=1)
    main = scores[:, : c * CHUNK].unflatten(1, (c, CHUNK))  # a view: no copy
    chunks = _positions(main.amax(dim=2).detach().numpy(), k)  # (b, k) the chunks with the k largest maxima
    candidates = torch.cat([main[torch.arange(b)[:, None], torch.from_numpy(chunks)].flatten(1),
                            scores[:, c * CHUNK :]], dim=1).detach().numpy()  # (b, k·CHUNK + the last chunk)
    best = _positions(candidates, k)
    values = np.take_along_axis(candidates, best, axis=1)
    order = np.argsort(-values, axis=1)
    best, values = np.take_along_axis(best, order, axis=1), np.take_along_axis(values, order, axis=1)
    in_chunk = best < k * CHUNK  # else in the last chunk
    chunk = np.take_along_axis(chunks, np.minimum(best // CHUNK, k - 1), axis=1)
    items = np.where(in_chunk, chunk * CHUNK + best % CHUNK, c * CHUNK + best - k * CHUNK)
    return torch.from_numpy(values), torch.from_numpy(items)


def _positions(x: np.ndarray, k: int) -> np.ndarray:
    """(b, k) positions of each row's k largest values, in no order (numpy's introselect), the rows in blocks on
    torch's thread count (numpy releases the GIL while it selects)."""
    select = lambda rows: np.argpartition(rows, x.shape[1] - k, axis=1)[:, -k:]  # noqa: E731
    threads = min(torch.get_num_threads(), len(x) // 128)
    if threads <= 1:
        return select(x)
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="lmrec-rank")
    bounds = np.linspace(0, len(x), threads + 1).astype(int)
    out = np.empty((len(x), k), dtype=np.intp)
    work = lambda lo, hi: out.__setitem__(slice(lo, hi), select(x[lo:hi]))  # noqa: E731
    futures = [_POOL.submit(work, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    work(bounds[0], bounds[1])
    for future in futures:
        future.result()
    return out


def fresh_scores(scorer: ScorerT) -> ScorerT:
    """Mark ``scorer`` (a function or method) as returning a new tensor at every call, which :func:`evaluate` may
    then mask in place instead of copying it."""
    scorer.fresh_scores = True  # type: ignore[attr-defined]
    return scorer


def top_k(
    scores: torch.Tensor, k: int, priority: torch.Tensor, exclude: sp.csr_matrix | None = None, owned: bool = False
) -> torch.Tensor:
    """Indices (b, k) of the k best items per row, ties by ``priority``, ``exclude``d entries never returned
    (unless a row has fewer than k other items; they then come last). ``scores`` is not modified, unless ``owned``
    (the caller gives it away: excluded entries are then set to -inf in it, no copy); a NaN anywhere in it is an
    error (a model that returns NaN is broken, even where the item is masked).

    Fast path: when a row's k + 1 best float32 scores are all distinct, no tie-break can change its top k or
    their order, so the float ``topk`` is the answer. Rows with a tie among them (and only those) are ranked
    by the exact :func:`tie_break_keys`. NaN is looked for where it cannot hide, with no pass of its own: among the
    excluded entries before they are masked, and among the k + 1 best of the others (NaN ranks above everything
    in :func:`largest`).
    """
    scores = scores.to(torch.float32)
    n_items = scores.shape[1]
    flat = None  # the excluded entries as row · n_items + item: a 1-d fill is cheaper than a 2-d index_put
    if exclude is not None and exclude.shape != scores.shape:
        raise ValueError(f"exclude has shape {exclude.shape}, the scores {tuple(scores.shape)}")
    if exclude is not None and exclude.nnz:
        rows = np.repeat(np.arange(exclude.shape[0], dtype=np.int64), np.diff(exclude.indptr))
        flat = torch.from_numpy(rows * n_items + exclude.indices).to(scores.device)
    ranked = scores
    if flat is not None:
        if not (owned and scores.is_contiguous()):  # view(-1) needs a contiguous tensor (a scorer may return .T)
            ranked = scores.clone(memory_format=torch.contiguous_format)
        if torch.isnan(ranked.view(-1)[flat]).any():
            _raise_nan(scores)
        ranked.view(-1).index_fill_(0, flat, -torch.inf)  # the tie path below masks its keys again: the same
    values, top = largest(ranked, min(k + 1, n_items))
    if torch.isnan(values).any():
        _raise_nan(scores)
    top = top[:, :k]
    tied = (values[:, 1:] == values[:, :-1]).any(dim=1).nonzero().squeeze(1)
    if len(tied):
        keys = tie_break_keys(scores[tied], priority.to(scores.device))
        if flat is not None:
            in_tied = torch.full((scores.shape[0],), -1, dtype=torch.long, device=scores.device)
            in_tied[tied] = torch.arange(len(tied), device=scores.device)
            row, item = flat // n_items, flat % n_items
            keep = in_tied[row] >= 0
            keys[in_tied[row[keep]], item[keep]] = MASKED_KEY
        top[tied] = torch.topk(keys, k, dim=1).indices
    return top


def _raise_nan(scores: torch.Tensor) -> None:
    row = int(torch.isnan(scores).any(dim=1).nonzero()[0])
    raise LmrecError(f"the model returned NaN scores (batch row {row}); cannot rank")


def hit_matrix(targets: sp.csr_matrix, users: np.ndarray, top: np.ndarray) -> np.ndarray:
    """(b, k) bool: whether ``top[r, j]`` is among the targets of ``users[r]`` (sorted-key lookup, no dense rows)."""
    n_items = targets.shape[1]
    rows = targets[users]
    keys = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(rows.indptr)) * n_items + rows.indices
    keys.sort()
    wanted = np.arange(len(users), dtype=np.int64)[:, None] * n_items + top
    at = np.searchsorted(keys, wanted).clip(max=max(len(keys) - 1, 0))
    return keys[at] == wanted if len(keys) else np.zeros(top.shape, dtype=bool)


def mask_matrix(data: SplitData, split: str, mask: Sequence[str] | None) -> tuple[sp.csr_matrix | None, tuple]:
    """Union of the masked splits minus the evaluated split's own targets."""
    mask = DEFAULT_MASK[split] if mask is None else tuple(mask)
    if not mask:
        return None, ()
    exclude = sp.csr_matrix(sum(data.split(name) for name in mask), copy=True)
    exclude.data[:] = 1.0
    overlap = exclude.multiply(data.split(split))
    if overlap.nnz:  # none where the splits are disjoint, as SplitData's are
        exclude = sp.csr_matrix(exclude - overlap)
        exclude.eliminate_zeros()
    return exclude, mask


def evaluate(
    scorer: Scorer,
    data: SplitData,
    split: str = "test",
    ks: Sequence[int] = (20,),
    metrics: Sequence[str] = ("recall", "ndcg", "hr"),
    mask: Sequence[str] | None = None,
    batch_size: int = 1024,
    seed: int = 0,
    users: np.ndarray | None = None,
    progress: bool = False,
    cold_users: str = "include",
    world: World | None = None,
    item_embeddings: np.ndarray | None = None,
) -> RankingResult:
    """Rank every item for every user with targets in ``split`` and compute per-user metrics.

    ``metrics``: accuracy metrics (:mod:`lmrec.eval.metrics`: recall, ndcg, hr, mrr, precision) and beyond-accuracy
    ones (:mod:`lmrec.eval.beyond`: coverage, novelty, arp, aplt, ild), all on the same top-K lists; ``ild`` needs
    ``item_embeddings`` ((n_items, d), e.g. the LM item features), and coverage is one catalog-level number
    (:attr:`RankingResult.catalog`).

    ``mask`` lists the splits whose items are removed from the ranking (default: train for valid,
    train + valid for test). ``users`` restricts the evaluation to a subset (still only users with targets).
    ``cold_users="exclude"`` leaves out the users with targets but no training interactions (a trained model knows
    nothing of them; runs evaluate this way); how many is ``protocol["excluded_cold_users"]``, and every metric's
    ``n`` counts the users scored. No user to score is a :class:`NothingToEvaluate` error.
    ``world`` (data-parallel training): each process ranks a contiguous share of the users and the top-K hit
    lists are gathered exactly, so every process returns the whole result.
    """
    if cold_users not in ("exclude", "include"):
        raise ValueError(f"cold_users must be 'exclude' or 'include', got {cold_users!r}")
    unknown = [m for m in metrics if m not in M.METRICS and m not in B.METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}: expected some of {[*M.METRICS, *B.METRICS]}")
    accuracy = tuple(m for m in metrics if m in M.METRICS)
    beyond = tuple(m for m in metrics if m in B.METRICS)
    unit = B.check(beyond, ks, data.n_items, item_embeddings)
    targets = data.split(split)
    has_targets = np.diff(targets.indptr) > 0
    candidates = np.flatnonzero(has_targets) if users is None else np.asarray(users)[has_targets[users]]
    cold = np.diff(data.train.indptr)[candidates] == 0
    if cold_users == "exclude":
        candidates = candidates[~cold]
    if len(candidates) == 0:
        raise NothingToEvaluate(f"{data.name}: no user has {split} items"
                                + (" and training items" if cold.any() and cold_users == "exclude" else "")
                                + f": nothing to evaluate on {split}")
    exclude, used_mask = mask_matrix(data, split, mask)
    k_max = max(ks)
    if k_max > data.n_items:
        raise ValueError(f"K={k_max} exceeds the catalog size {data.n_items}")
    priority = torch.rand(data.n_items, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    world = world or World()
    fresh = getattr(scorer, "fresh_scores", False)  # its scores are masked in place (see fresh_scores)
    lo, hi = world.bounds(len(candidates))
    mine = candidates[lo:hi]
    all_hits, all_top = [], []
    batches = range(0, len(mine), batch_size)
    for start in tqdm(batches, desc=f"rank {split}", disable=not progress, leave=False):
        batch = mine[start : start + batch_size]
        with torch.no_grad():
            scores = scorer(batch)
        if scores.shape != (len(batch), data.n_items):
            raise LmrecError(f"scorer returned shape {tuple(scores.shape)}, expected {(len(batch), data.n_items)}")
        top = top_k(scores, k_max, priority, None if exclude is None else exclude[batch], owned=fresh).cpu().numpy()
        all_hits.append(hit_matrix(targets, batch, top))
        if beyond:
            all_top.append(top)
    hits = np.concatenate(all_hits) if all_hits else np.zeros((0, k_max), bool)
    hits = world.gather_rows(hits, len(candidates))
    n_targets = np.diff(targets.indptr)[candidates]
    per_user = M.compute(hits, n_targets, accuracy, tuple(ks))
    catalog: dict[str, float] = {}
    if beyond:
        tops = np.concatenate(all_top) if all_top else np.zeros((0, k_max), np.int64)
        more, catalog = B.compute(world.gather_rows(tops, len(candidates)), beyond, tuple(ks), data.train, unit)
        per_user.update(more)
    protocol = {
        "split": split,
        "ranking": "full catalog",
        "masked": list(used_mask),
        "ties": TIE_POLICY,
        "seed": seed,
        "users": int(len(candidates)),
        "excluded_cold_users": int(cold.sum()) if cold_users == "exclude" else 0,
        "items": int(data.n_items),
    }
    if beyond:
        pop = B.item_popularity(data.train)
        protocol["popularity"] = "training users per item (train split only)"
        protocol["head_items"] = int((~B.long_tail(pop)).sum())
    return RankingResult(split, candidates, per_user, protocol, catalog)
