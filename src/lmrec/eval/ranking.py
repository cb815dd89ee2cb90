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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


def top_k(
    scores: torch.Tensor, k: int, priority: torch.Tensor, exclude: sp.csr_matrix | None = None
) -> torch.Tensor:
    """Indices (b, k) of the k best items per row, ties by ``priority``, ``exclude``d entries never returned
    (unless a row has fewer than k other items; they then come last). ``scores`` is not modified; a NaN anywhere
    in it is an error (a model that returns NaN is broken, even where the item is masked).

    Fast path: when a row's k + 1 best float32 scores are all distinct, no tie-break can change its top k or
    their order, so the float ``topk`` is the answer. Rows with a tie among them (and only those) are ranked
    by the exact :func:`tie_break_keys`.
    """
    if torch.isnan(scores.sum()):  # one pass, no bool copy: NaN in, or +inf with -inf, makes the sum NaN
        nan_rows = torch.isnan(scores).any(dim=1).nonzero()
        if len(nan_rows):
            raise LmrecError(f"the model returned NaN scores (batch row {int(nan_rows[0])}); cannot rank")
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
        ranked = scores.clone(memory_format=torch.contiguous_format)  # view(-1) needs it (a scorer may return .T)
        ranked.view(-1).index_fill_(0, flat, -torch.inf)
    values, top = torch.topk(ranked, min(k + 1, n_items), dim=1)
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
    exclude = sum(data.split(name) for name in mask)
    exclude = sp.csr_matrix(exclude)
    exclude.data[:] = 1.0
    exclude = exclude - exclude.multiply(data.split(split))
    exclude.eliminate_zeros()
    return sp.csr_matrix(exclude), mask


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
        top = top_k(scores, k_max, priority, None if exclude is None else exclude[batch]).cpu().numpy()
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
