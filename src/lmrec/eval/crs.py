"""Conversational evaluation: full-catalog rank of each (turn, target) pair, HR/NDCG/MRR@K with SE.

For a pair with target score s⁺ let g = #{items with s > s⁺} and e = #{items with s = s⁺} (target included).

Tie policies:
- ``"expected"`` (default): the metric's expectation when ties are broken uniformly at random — the rank is
  uniform on {g, …, g+e−1}, so E[HR@K] = |{r < K}|/e and E[NDCG@K] = (1/e)·Σ_{r<K} 1/log2(r+2) over that set.
  A constant scorer gets exactly the random level K/n.
- ``"average"``: the official RTA evaluator, rank = ⌊(g + (g+e))/2⌋ = ⌊g + e/2⌋, HR@K = [rank < K],
  NDCG@K = [rank < K]/log2(rank+2) (a constant scorer gets rank ⌊n/2⌋).

``remove_mentioned`` removes the items mentioned earlier in the conversation from the ranking (never the
target itself), and ``new_only`` keeps only targets that were not mentioned before — together they give the
"new items" condition; the default keeps all targets and ranks every item (the official protocol).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import digamma

from lmrec.data.conversations import CRSSample, expand_pairs
from lmrec.errors import LmrecError
from lmrec.eval.stats import Estimate, summarize

CRSScorer = Callable[[Sequence[CRSSample]], torch.Tensor]  # samples -> (len(samples), n_items)
DEFAULT_KS = (1, 5, 10, 50)


@dataclass
class CRSResult:
    """Per-pair metric values, the pairs' (sample index, target, is_new) and how they were computed."""

    per_pair: dict[str, np.ndarray]
    pairs: np.ndarray  # (n_pairs, 3): sample index, target item, is_new
    ranks: np.ndarray  # (n_pairs,) rank under the "average" rule (0-based), for analyses
    protocol: dict[str, object] = field(default_factory=dict)

    def summary(self) -> dict[str, Estimate]:
        return summarize(self.per_pair)

    def to_dict(self) -> dict[str, dict[str, float | int]]:
        return {name: est.as_dict() for name, est in self.summary().items()}

    def subset(self, mask: np.ndarray) -> CRSResult:
        """The same result restricted to the pairs where ``mask`` is true (e.g. one popularity bucket)."""
        return CRSResult({k: v[mask] for k, v in self.per_pair.items()}, self.pairs[mask], self.ranks[mask],
                         self.protocol)


def pair_metrics(greater: np.ndarray, equal: np.ndarray, ks: Sequence[int], ties: str) -> dict[str, np.ndarray]:
    """HR@K, NDCG@K (and MRR) per pair from g = #greater and e = #equal (e ≥ 1, target included)."""
    g, e = greater.astype(np.int64), np.maximum(equal.astype(np.int64), 1)
    out: dict[str, np.ndarray] = {}
    if ties == "average":
        rank = (2 * g + e) // 2
        for k in ks:
            hit = rank < k
            out[f"hr@{k}"] = hit.astype(np.float64)
            out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)
        out["mrr"] = 1.0 / (rank + 1.0)
        return out
    if ties != "expected":
        raise ValueError(f"unknown tie policy {ties!r}: expected 'expected' or 'average'")
    for k in ks:
        inside = np.clip(k - g, 0, e)  # how many of the e equally likely ranks are < K
        out[f"hr@{k}"] = inside / e
        disc = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
        lo, hi = np.minimum(g, k), np.minimum(g + e, k)
        out[f"ndcg@{k}"] = (disc[hi] - disc[lo]) / e
    # MRR over the full ranking: mean of 1/(r+1) for r in [g, g+e): (H(g+e) - H(g)) / e via digamma
    out["mrr"] = (digamma(g + e + 1.0) - digamma(g + 1.0)) / e
    return out


def evaluate_crs(
    scorer: CRSScorer,
    samples: Sequence[CRSSample],
    n_items: int,
    ks: Sequence[int] = DEFAULT_KS,
    ties: str = "expected",
    new_only: bool = False,
    remove_mentioned: bool = False,
    batch_size: int = 64,
    candidates: np.ndarray | None = None,
) -> CRSResult:
    """Rank the catalog for every sample and score every (turn, target) pair.

    ``candidates`` (optional) restricts the ranking to a subset of item indices (e.g. a dataset's own items
    inside a larger index); other items are excluded.
    """
    pairs = np.array([tuple(p) for p in expand_pairs(samples)], dtype=np.int64).reshape(-1, 3)
    if new_only:
        pairs = pairs[pairs[:, 2] == 1]
    if len(pairs) == 0:
        raise LmrecError("no (turn, target) pairs to evaluate")
    greater = np.zeros(len(pairs), np.int64)
    equal = np.zeros(len(pairs), np.int64)
    allowed = None
    if candidates is not None:
        allowed = torch.zeros(n_items, dtype=torch.bool)
        allowed[torch.as_tensor(candidates)] = True
    by_sample = {}
    for row, (s, _, _) in enumerate(pairs):
        by_sample.setdefault(int(s), []).append(row)
    needed = sorted(by_sample)
    for start in range(0, len(needed), batch_size):
        batch_ids = needed[start : start + batch_size]
        with torch.no_grad():
            scores = scorer([samples[i] for i in batch_ids]).to("cpu", torch.float32).clone()
        if scores.shape != (len(batch_ids), n_items):
            raise LmrecError(f"CRS scorer returned shape {tuple(scores.shape)}, expected {(len(batch_ids), n_items)}")
        if torch.isnan(scores).any():
            raise LmrecError("the CRS scorer returned NaN scores")
        if allowed is not None:
            scores[:, ~allowed] = -torch.inf
        for b, sample_id in enumerate(batch_ids):
            rows = by_sample[sample_id]
            targets = torch.as_tensor(pairs[rows, 1])
            target_scores = scores[b, targets][:, None]  # (t, 1): each pair keeps its own target's score
            ranked = scores[b]
            own_masked = torch.zeros(len(rows), dtype=torch.long)
            if remove_mentioned and samples[sample_id].mentioned:
                mentioned = torch.as_tensor(samples[sample_id].mentioned)
                ranked = ranked.clone()
                ranked[mentioned] = -torch.inf
                own_masked = torch.isin(targets, mentioned).long()  # a repeated target still counts itself
            greater[rows] = (ranked[None, :] > target_scores).sum(dim=1).numpy()
            equal[rows] = ((ranked[None, :] == target_scores).sum(dim=1) + own_masked).numpy()
    per_pair = pair_metrics(greater, equal, ks, ties)
    ranks = (2 * greater + np.maximum(equal, 1)) // 2
    protocol = {"ranking": "full catalog" if candidates is None else f"{len(candidates)} candidate items",
                "ties": ties, "targets": "new only" if new_only else "all",
                "mentioned_items": "removed from the ranking" if remove_mentioned else "kept in the ranking",
                "pairs": int(len(pairs)), "samples": int(len(needed))}
    return CRSResult(per_pair, pairs, ranks, protocol)


def evaluate_turns(scorer: CRSScorer, samples: Sequence[CRSSample], n_items: int, ks: Sequence[int] = DEFAULT_KS,
                   batch_size: int = 64) -> dict[str, CRSResult]:
    """``{"all": ..., "new": ...}``: every (turn, target) pair over the full catalog (the official protocol), and
    the new targets only with the items mentioned earlier removed from the ranking (when there are new targets)."""
    out = {"all": evaluate_crs(scorer, samples, n_items, ks=ks, batch_size=batch_size)}
    if any(any(s.target_is_new) for s in samples):
        out["new"] = evaluate_crs(scorer, samples, n_items, ks=ks, new_only=True, remove_mentioned=True,
                                  batch_size=batch_size)
    return out
