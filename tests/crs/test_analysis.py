"""Popularity buckets, the title-masking probe and the results table, by hand."""

import numpy as np
import pytest
import torch

from helpers import single_thread  # noqa: F401
from lmrec.data.catalog import ItemCatalog
from lmrec.data.conversations import CRSSample
from lmrec.eval.crs import CRSResult, evaluate_crs
from lmrec.eval.crs_analysis import (
    MASK,
    bucket_of,
    buckets_table,
    crs_table,
    masking_probe,
    popularity_buckets,
    probe_delta,
    quantile_bounds,
    replace_titles,
    title_variants,
)


def result(targets, hits) -> CRSResult:
    """A CRSResult with one pair per target and the given HR@10 values."""
    n = len(targets)
    pairs = np.stack([np.arange(n), np.asarray(targets), np.ones(n, dtype=np.int64)], axis=1)
    hits = np.asarray(hits, dtype=np.float64)
    return CRSResult({"hr@10": hits, "ndcg@10": hits / 2}, pairs, np.zeros(n, dtype=np.int64))


# -- popularity buckets -----------------------------------------------------------------------------------------
COUNTS = np.array([0, 5, 10, 50, 99, 100, 250])  # cold: items 0, 1; warm: 2, 3, 4; popular: 5, 6


def test_bucket_edges():
    assert bucket_of(np.array([0, 9, 10, 99, 100, 10**6])).tolist() == [0, 0, 1, 1, 2, 2]


def test_popularity_buckets_by_hand():
    targets = [1, 3, 5, 6, 6]
    rows = popularity_buckets({"a": result(targets, [1, 0, 1, 1, 0]), "b": result(targets, [0, 0, 1, 0, 0])}, COUNTS)
    assert [r.bucket for r in rows] == ["cold", "warm", "popular"]
    assert [(r.lo, r.hi) for r in rows] == [(0, 10.0), (10, 100.0), (100, np.inf)]
    assert [r.n_items for r in rows] == [2, 3, 2]
    assert [r.n_occurrences for r in rows] == [5, 159, 350]
    assert [r.n_pairs for r in rows] == [1, 1, 3]
    assert [r.hr["a"].mean for r in rows] == [1.0, 0.0, pytest.approx(2 / 3)]
    assert [r.hr["b"].mean for r in rows] == [0.0, 0.0, pytest.approx(1 / 3)]
    assert rows[2].hr["a"].se == pytest.approx(np.std([1, 1, 0], ddof=1) / np.sqrt(3))
    table = buckets_table(rows)
    assert table.splitlines()[0] == "| bucket | #items | #occurrences | #test pairs | a HR@10 | b HR@10 |"
    assert "| popular [100, ∞) | 2 | 350 | 3 | 0.6667 ± 0.3333 | 0.3333 ± 0.3333 |" in table
    assert rows[0].as_dict()["items"] == 2


def test_popularity_buckets_single_result_empty_bucket_and_mismatch():
    rows = popularity_buckets(result([0, 1], [1, 0]), COUNTS)
    assert list(rows[0].hr) == ["model"]
    assert rows[2].n_pairs == 0 and np.isnan(rows[2].hr["model"].mean)
    assert "–" in buckets_table(rows).splitlines()[-1]  # an empty bucket prints a dash
    with pytest.raises(ValueError, match="other"):
        popularity_buckets({"a": result([0, 1], [1, 0]), "b": result([0, 2], [1, 0])}, COUNTS)


# -- masking -----------------------------------------------------------------------------------------------------
def test_title_variants():
    assert title_variants("Heat (1995)") == ["Heat (1995)", "Heat"]
    assert title_variants("Heat") == ["Heat"]
    assert title_variants("Akira ()") == ["Akira"]
    assert title_variants("  Blade  Runner (1982) ") == ["Blade Runner (1982)", "Blade Runner"]


def test_mask_titles_with_and_without_year_and_leave_other_text():
    text = "User: I loved heat (1995) and Heat! Heatwave is not a movie. Also It (2017), but it was long."
    out = replace_titles(text, {0: "Heat (1995)", 1: "It (2017)"})
    assert out == f"User: I loved {MASK} and {MASK}! Heatwave is not a movie. Also {MASK}, but it was long."
    # a short bare title ("It") only matches with its exact case; long ones ignore case
    assert replace_titles("It was It.", {1: "It (2017)"}) == f"{MASK} was {MASK}."
    assert replace_titles("Nothing here", {0: "Heat (1995)"}) == "Nothing here"
    # punctuation between the words and around the title is optional; "()" is an empty year
    titles = {0: "Mission: Impossible - Fallout (2018)", 1: "Shazam! (2019)", 2: "Akira ()"}
    text = "Mission Impossible: Fallout, SHAZAM and Shazam! (2019), Akira? Shazamming."
    assert replace_titles(text, titles) == f"{MASK}, {MASK} and {MASK}, {MASK}? Shazamming."
    assert replace_titles("Heat", {}) == "Heat"


def test_replace_titles_keeps_the_form_of_each_occurrence():
    out = replace_titles("Heat (1995) or just Heat?", {0: "Heat (1995)"}, {0: "Ronin (1998)"})
    assert out == "Ronin (1998) or just Ronin?"


CATALOG = ItemCatalog([str(i) for i in range(6)],
                      ["Heat (1995)", "Ronin (1998)", "Alien (1979)", "Up (2009)", "Jaws (1975)", "Big (1988)"])


def samples():
    return [
        CRSSample("a", 2, "User: I like Heat and Alien (1979)\nSystem: ok\nUser: more like heat (1995)", [0, 2], [1],
                  [True]),
        CRSSample("b", 1, "User: nothing in particular", [], [3], [True]),
    ]


def test_masking_probe_mask_mode():
    before = samples()
    after = masking_probe(before, CATALOG, mode="mask")
    assert after[0].context == f"User: I like {MASK} and {MASK}\nSystem: ok\nUser: more like {MASK}"
    assert after[1].context == before[1].context
    for a, b in zip(after, before, strict=True):
        assert (a.mentioned, a.targets, a.target_is_new, a.conv_id, a.turn_id) == \
            (b.mentioned, b.targets, b.target_is_new, b.conv_id, b.turn_id)
    assert before[0].context.startswith("User: I like Heat")  # the input is left alone


def test_masking_probe_replace_mode():
    before = samples()
    after = masking_probe(before, CATALOG, mode="replace", seed=3)
    assert after == masking_probe(before, CATALOG, mode="replace", seed=3)  # seeded
    context = after[0].context
    assert "Heat" not in context and "Alien" not in context and "heat" not in context
    first, _, last = context.splitlines()
    heat = last.removeprefix("User: more like ")  # "heat (1995)" -> a full stand-in title
    bare_heat = title_variants(heat)[1]
    alien = first.removeprefix(f"User: I like {bare_heat} and ")  # "Heat" -> the same stand-in, bare form
    assert first.startswith(f"User: I like {bare_heat} and ")
    for stand_in in (heat, alien):
        assert stand_in in CATALOG.titles and stand_in not in ("Heat (1995)", "Alien (1979)")
    assert after[1].context == before[1].context
    with pytest.raises(ValueError, match="mode"):
        masking_probe(before, CATALOG, mode="drop")


def text_scorer(samples_):
    """A 'text model': item i scores 1 when its bare title appears in the context."""
    bare = [title_variants(t)[-1].lower() for t in CATALOG.titles]
    return torch.tensor([[float(b in s.context.lower()) for b in bare] for s in samples_])


def item_scorer(samples_):
    """An 'item model': scores from the mentioned items only."""
    out = torch.zeros(len(samples_), len(CATALOG))
    for r, s in enumerate(samples_):
        out[r, s.mentioned] = 1.0
    return out


def test_probe_delta():
    s = [CRSSample(f"c{i}", 1, "User: I liked Heat (1995) a lot", [0], [0], [False]) for i in range(4)]
    s.append(CRSSample("c4", 1, "User: any movie", [0], [0], [False]))  # no title in the text: unchanged
    text = probe_delta(text_scorer, s, CATALOG, mode="mask", k=1)
    assert text.before.per_pair["hr@1"].tolist() == [1, 1, 1, 1, pytest.approx(1 / 6)]
    assert np.allclose(text.after.per_pair["hr@1"], 1 / 6)  # all tied after masking
    assert text.test.diff.mean == pytest.approx(4 * (1 / 6 - 1) / 5)
    assert text.n_changed == 4 and text.as_dict()["changed_samples"] == 4
    items = probe_delta(item_scorer, s, CATALOG, mode="replace", k=1)
    assert items.test.diff.mean == 0.0 and items.test.t_pvalue == 1.0  # item models do not read the text
    assert items.as_dict()["before"]["mean"] == items.as_dict()["after"]["mean"] == 1.0
    # ranks: the target first before masking; after it, six tied items give rank 1 + 5/2 = 3.5 by expectation
    assert text.rank_shift.mean == pytest.approx(4 * 2.5 / 5) and text.median_rank == (1.0, 3.5)
    assert items.rank_shift.mean == 0.0 and items.overlap.mean == 1.0  # the same top-1 list
    assert text.as_dict()["top_overlap"]["n"] == 5


def test_quantile_bounds_split_the_pairs_in_thirds():
    counts = np.array([0, 1, 2, 5, 9, 40, 100, 300])
    targets = np.array([0, 0, 1, 2, 3, 4, 5, 6, 7])  # the pairs' targets: their counts 0 0 1 2 5 9 40 100 300
    assert quantile_bounds(counts, targets) == [2, 20]  # ceil of the 1/3 and 2/3 quantiles (1.67, 19.33)
    rows = popularity_buckets(result([0, 0, 1, 2, 3, 4, 5, 6, 7], [1] * 9), counts, quantile_bounds(counts, targets))
    assert [r.n_pairs for r in rows] == [3, 3, 3]
    assert quantile_bounds(counts, np.array([], dtype=int)) == []


# -- table -------------------------------------------------------------------------------------------------------
def test_crs_table():
    s = [CRSSample("c", 1, "", [], [0], [True]), CRSSample("d", 1, "", [], [5], [True])]
    res = evaluate_crs(item_scorer, s, len(CATALOG))
    table = crs_table({"items": res})
    lines = table.splitlines()
    assert lines[0] == "| model | HR@1 | HR@5 | HR@10 | HR@50 | NDCG@10 | NDCG@50 |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    # constant scorer over 6 items: HR@1 = 1/6, HR@5 = 5/6, HR@10 = HR@50 = 1
    assert lines[2].startswith("| items | 0.1667 ± 0.0000 | 0.8333 ± 0.0000 | 1.0000 ± 0.0000 | 1.0000 ± 0.0000 |")


def test_matched_comparison_takes_the_best_llm_row_that_a_baseline_matches():
    """An LLM row that also learned from item prompts has no baseline on its turns: the matched comparison
    pairs the best LLM row that has one; best-vs-best still takes the best of all."""
    from lmrec.experiments.rta_table import Row, _best_vs_best

    samples = [CRSSample(f"c{i}", 1, "x", [], [i % 6], [True]) for i in range(12)]

    def row(name: str, kind: str, hits_target: bool, turns: int) -> Row:
        def scorer(batch):  # the target first, or last of 20 items
            scores = torch.zeros(len(batch), 20)
            for r, s in enumerate(batch):
                scores[r, s.targets[0]] = 1.0 if hits_target else -1.0
            return scores
        result = evaluate_crs(scorer, samples, 20, ks=(1, 10))
        return Row(name, kind, scorer, {"valid": result, "test": result}, turns)

    rows = [row("fism", "baseline", False, 100), row("reindexed", "llm", False, 100),
            row("reindexed + item prompts", "llm", True, 150)]
    results = {r.name: r.results["test"] for r in rows}
    assert _best_vs_best(rows, results, samples)["llm"] == "reindexed + item prompts"
    matched = _best_vs_best(rows, results, samples, matched=True)
    assert matched["llm"] == "reindexed" and matched["baseline"] == "fism"
