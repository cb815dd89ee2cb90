"""Analyses of conversational recommenders: results tables, popularity buckets and the title-masking probe.

- :func:`crs_table`: one markdown row per model, HR@{1,5,10,50} and NDCG@{10,50} as mean ± SE over pairs.
- :func:`popularity_buckets`: items split by their number of training mentions c — cold c ∈ [0, 10),
  warm [10, 100), popular [100, ∞) (RTA's buckets), or at the bounds of :func:`quantile_bounds` (about a third of
  the test pairs each) — with #items, #occurrences (Σ c), #test pairs whose target is in the bucket and each model's
  HR@10 over those pairs.
- :func:`masking_probe` / :func:`probe_delta`: rewrite the contexts so the titles of the mentioned items are
  masked (``"[MASK]"``) or replaced by random other titles, keep ``mentioned`` unchanged (item-based models are
  unaffected, text models see the change), and compare HR@10 before / after with a paired test, the shift of each
  target's rank, and how much of each top-10 list stays.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import CRSSample
from lmrec.eval.crs import CRSResult, CRSScorer, evaluate_crs
from lmrec.eval.report import estimate_cell
from lmrec.eval.stats import Estimate, PairedTest, estimate, paired_test

TABLE_METRICS = ("hr@1", "hr@5", "hr@10", "hr@50", "ndcg@10", "ndcg@50")
MASK = "[MASK]"


def crs_table(results: Mapping[str, CRSResult], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Markdown table ``model | HR@1 | HR@5 | HR@10 | HR@50 | NDCG@10 | NDCG@50``, cells ``mean ± SE``."""
    header = "| model | " + " | ".join(m.upper() for m in metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 1)]
    for name, result in results.items():
        summary = result.summary()
        cells = [estimate_cell(summary[m]) if m in summary else "–" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- popularity buckets -----------------------------------------------------------------------------------------
BUCKET_NAMES = ("cold", "warm", "popular")


def bucket_of(counts: np.ndarray, bounds: Sequence[int] = (10, 100)) -> np.ndarray:
    """Bucket index of each item: 0 for c < bounds[0], 1 for bounds[0] ≤ c < bounds[1], …"""
    return np.searchsorted(np.asarray(bounds), np.asarray(counts), side="right")


@dataclass
class BucketRow:
    """One popularity bucket [lo, hi) of training-mention counts."""

    bucket: str
    lo: int
    hi: float  # inf for the last bucket
    n_items: int  # catalog items in the bucket
    n_occurrences: int  # their training mentions, summed
    n_pairs: int  # evaluated (turn, target) pairs whose target is in the bucket
    hr: dict[str, Estimate]  # model -> HR@k over those pairs

    def as_dict(self) -> dict[str, object]:
        return {"bucket": self.bucket, "range": [self.lo, self.hi], "items": self.n_items,
                "occurrences": self.n_occurrences, "pairs": self.n_pairs,
                "hr": {m: e.as_dict() for m, e in self.hr.items()}}


def popularity_buckets(
    results: CRSResult | Mapping[str, CRSResult],
    train_counts: np.ndarray,
    bounds: Sequence[int] = (10, 100),
    k: int = 10,
    names: Sequence[str] | None = None,
) -> list[BucketRow]:
    """Rows cold [0, b0), warm [b0, b1), popular [b1, ∞) (other numbers of buckets, or ``names=None`` with other
    bounds: ``"[lo, hi)"``; ``names`` gives one name per bucket).

    ``train_counts[i]`` = training mentions of item i (:func:`training_mentions`, length n_items);
    ``results`` one result or ``{model: result}`` evaluated on the same pairs.
    """
    if isinstance(results, CRSResult):
        results = {"model": results}
    if not results:
        raise ValueError("popularity_buckets needs at least one result")
    counts = np.asarray(train_counts, dtype=np.int64)
    first = next(iter(results.values()))
    for name, result in results.items():
        if not np.array_equal(result.pairs, first.pairs):
            raise ValueError(f"result {name!r} was evaluated on other (turn, target) pairs than the first")
    item_bucket = bucket_of(counts, bounds)
    pair_bucket = item_bucket[first.pairs[:, 1]]
    edges = [0, *bounds, np.inf]
    if names is None:
        names = BUCKET_NAMES if tuple(bounds) == (10, 100) else [f"[{lo}, {hi})" for lo, hi in zip(edges, edges[1:],
                                                                                                     strict=False)]
    if len(names) != len(bounds) + 1:
        raise ValueError(f"{len(bounds) + 1} buckets but {len(names)} names")
    rows = []
    for b, name in enumerate(names):
        in_bucket = item_bucket == b
        pairs = pair_bucket == b
        rows.append(BucketRow(
            bucket=name, lo=int(edges[b]), hi=float(edges[b + 1]),
            n_items=int(in_bucket.sum()), n_occurrences=int(counts[in_bucket].sum()), n_pairs=int(pairs.sum()),
            hr={m: estimate(r.per_pair[f"hr@{k}"][pairs]) for m, r in results.items()},
        ))
    return rows


def quantile_bounds(train_counts: np.ndarray, targets: np.ndarray, parts: int = 3) -> list[int]:
    """Bounds b₁ < … of training-mention counts so that each bucket [b_j, b_{j+1}) holds about 1/``parts`` of the
    evaluated pairs: the j/parts quantiles of the counts of the pairs' ``targets``, rounded up, duplicates dropped
    (a bucket can hold more than its share when many pairs share one count)."""
    counts = np.asarray(train_counts)[np.asarray(targets)]
    if len(counts) == 0:
        return []
    cuts = np.ceil(np.quantile(counts, [j / parts for j in range(1, parts)])).astype(np.int64)
    return sorted({int(c) for c in cuts if c > 0})


def buckets_table(rows: Sequence[BucketRow], k: int = 10) -> str:
    """Markdown: ``bucket | #items | #occurrences | #test pairs | <model> HR@k …``."""
    models = list(rows[0].hr) if rows else []
    lines = ["| bucket | #items | #occurrences | #test pairs | " + " | ".join(f"{m} HR@{k}" for m in models) + " |",
             "|" + "---|" * (4 + len(models))]
    for r in rows:
        hi = "∞" if r.hi == np.inf else str(int(r.hi))
        cells = [estimate_cell(r.hr[m]) for m in models]
        lines.append(f"| {r.bucket} [{r.lo}, {hi}) | {r.n_items} | {r.n_occurrences} | {r.n_pairs} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- masking probe ----------------------------------------------------------------------------------------------
_YEAR = re.compile(r"\s*\((\d{4})?\)\s*$")  # "(1995)", or "()" as some INSPIRED titles have
_WORD = re.compile(r"\w+")
SHORT_TITLE = 4  # bare titles shorter than this ("It", "Up", "Her") only match with their exact case


def _key(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def title_variants(title: str) -> list[str]:
    """How a title may appear in a context: ``"Heat (1995)"`` → ``["Heat (1995)", "Heat"]`` (full first);
    ``"Akira ()"`` → ``["Akira"]``."""
    title = " ".join(title.split())
    bare = _YEAR.sub("", title).strip()
    if not bare or _key(bare) == _key(title):
        return [bare] if _key(bare) else []
    return [title, bare]


def _variant_regex(variant: str) -> str:
    """The variant's words with any non-word characters between them, its leading / trailing punctuation
    optional: ``"Mad Max: Fury Road"`` matches "Mad Max Fury Road", ``"Heat (1995)"`` "Heat 1995" and
    ``"Shazam!"`` "Shazam"; case-insensitive unless the variant is short."""
    body = r"\W+".join(re.escape(w) for w in _WORD.findall(variant))
    head, tail = re.match(r"^(\W*)", variant).group(1), re.search(r"(\W*)$", variant).group(1).strip()
    body = (f"(?:{re.escape(head)})?" if head else "") + body + (f"(?:{re.escape(tail)})?" if tail else "")
    return body if len(variant) < SHORT_TITLE else f"(?i:{body})"


def replace_titles(text: str, titles: Mapping[int, str], replacement: Mapping[int, str] | None = None) -> str:
    """Replace every occurrence of each ``titles[item]`` by ``"[MASK]"``, or by ``replacement[item]`` (a full
    title where the occurrence had the year, else its bare form).

    An occurrence is "Title (Year)" or the bare "Title", as whole words, ignoring punctuation between the words
    (so "Mission Impossible: Fallout" is "Mission: Impossible - Fallout") and case, except for bare titles shorter
    than 4 characters, which must match exactly. Longer variants win; a bare title shared by two items goes to
    the first. Limits: spelling variants ("Queen and Slim" for "Queen & Slim", typos) are not found, and a bare
    title inside a longer unmentioned title is replaced ("The Heat" when "Heat (1995)" is mentioned).
    """
    variants: dict[str, tuple[int, bool]] = {}  # key of the variant -> (item, whether it has the year)
    for item, title in titles.items():
        forms = title_variants(title)
        for j, v in enumerate(forms):
            variants.setdefault(_key(v), (item, j == 0 and len(forms) == 2))
    if not variants:
        return text
    forms = [v for title in titles.values() for v in title_variants(title)]
    parts = [_variant_regex(v) for v in sorted(set(forms), key=len, reverse=True)]
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)")

    def sub(m: re.Match[str]) -> str:
        if replacement is None:
            return MASK
        item, with_year = variants[_key(m.group(0))]
        new = title_variants(replacement[item]) or [replacement[item]]
        return new[0] if with_year else new[-1]

    return pattern.sub(sub, text)


def masking_probe(samples: Sequence[CRSSample], catalog: ItemCatalog, mode: str = "mask",
                  seed: int = 0) -> list[CRSSample]:
    """New samples whose contexts have the titles of their ``mentioned`` items masked (``mode="mask"``) or each
    replaced by one random title of an item not mentioned in that sample (``mode="replace"``, the same stand-in
    for every occurrence of an item; drawn with ``numpy.random.default_rng(seed)``); everything else unchanged."""
    if mode not in ("mask", "replace"):
        raise ValueError(f"mode must be 'mask' or 'replace', got {mode!r}")
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        titles = {i: catalog.titles[i] for i in s.mentioned}
        replacement = None
        if mode == "replace" and titles:
            excluded = set(s.mentioned)
            replacement = {}
            for i in s.mentioned:
                while True:
                    j = int(rng.integers(len(catalog)))
                    if j not in excluded or len(excluded) >= len(catalog):
                        break
                replacement[i] = catalog.titles[j]
        out.append(replace(s, context=replace_titles(s.context, titles, replacement),
                           mentioned=list(s.mentioned), targets=list(s.targets),
                           target_is_new=list(s.target_is_new)))
    return out


@dataclass
class ProbeResult:
    """HR@k before and after rewriting the contexts, and the paired test of after − before over the pairs; the
    shift of each target's rank (after − before; positive: the target fell) and the share of each sample's top-k
    list that the rewrite leaves in it (ranks over every pair of the samples, nothing removed)."""

    before: CRSResult
    after: CRSResult
    test: PairedTest
    n_changed: int  # samples whose context the rewrite changed
    metric: str
    rank_shift: Estimate  # over the pairs
    median_rank: tuple[float, float]  # (before, after) over the pairs
    overlap: Estimate  # |top-k before ∩ top-k after| / k, over the samples

    def as_dict(self) -> dict[str, object]:
        b, a = self.before.summary()[self.metric], self.after.summary()[self.metric]
        return {"metric": self.metric, "before": b.as_dict(), "after": a.as_dict(),
                "delta": self.test.diff.as_dict(), "t_pvalue": self.test.t_pvalue,
                "wilcoxon_pvalue": self.test.wilcoxon_pvalue, "changed_samples": self.n_changed,
                "rank_shift": self.rank_shift.as_dict(), "median_rank_before": self.median_rank[0],
                "median_rank_after": self.median_rank[1], "top_overlap": self.overlap.as_dict()}


def target_ranks_and_tops(scorer: CRSScorer, samples: Sequence[CRSSample], k: int = 10, batch_size: int = 64
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(rank of every (sample, target) pair in sample then target order, with ties counted by expectation:
    1 + #higher + #other equal / 2; the top-k item indices of each sample (b, k))."""
    import torch

    ranks, tops = [], []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        with torch.no_grad():
            scores = scorer(batch).float()
        tops.append(torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.cpu().numpy())
        for row, s in enumerate(batch):
            target_scores = scores[row, s.targets]
            higher = (scores[row][None, :] > target_scores[:, None]).sum(1)
            equal = (scores[row][None, :] == target_scores[:, None]).sum(1) - 1
            ranks.extend((1 + higher + equal / 2).tolist())
    return np.asarray(ranks, dtype=np.float64), np.concatenate(tops) if tops else np.zeros((0, k), np.int64)


def probe_delta(
    scorer: CRSScorer,
    samples: Sequence[CRSSample],
    catalog: ItemCatalog,
    mode: str = "mask",
    seed: int = 0,
    k: int = 10,
    new_only: bool = False,
    remove_mentioned: bool = False,
    ties: str = "expected",
    batch_size: int = 64,
) -> ProbeResult:
    """Evaluate ``scorer`` on ``samples`` and on their :func:`masking_probe` rewrite (same pairs, same
    :func:`evaluate_crs` options) and test HR@k after vs before, paired over the (turn, target) pairs."""
    probed = masking_probe(samples, catalog, mode, seed)
    options = dict(ks=(k,), ties=ties, new_only=new_only, remove_mentioned=remove_mentioned, batch_size=batch_size)
    before = evaluate_crs(scorer, samples, len(catalog), **options)  # type: ignore[arg-type]
    after = evaluate_crs(scorer, probed, len(catalog), **options)  # type: ignore[arg-type]
    metric = f"hr@{k}"
    test = paired_test(before.per_pair[metric], after.per_pair[metric])
    changed = sum(a.context != b.context for a, b in zip(samples, probed, strict=True))
    rank_before, top_before = target_ranks_and_tops(scorer, samples, k, batch_size)
    rank_after, top_after = target_ranks_and_tops(scorer, probed, k, batch_size)
    overlap = np.array([len(set(a) & set(b)) / top_before.shape[1] for a, b in zip(top_before, top_after)])
    return ProbeResult(before, after, test, changed, metric, estimate(rank_after - rank_before),
                       (float(np.median(rank_before)), float(np.median(rank_after))), estimate(overlap))
