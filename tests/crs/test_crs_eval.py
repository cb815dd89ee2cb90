"""lmrec.eval.crs by hand: both tie policies, a constant scorer, new-only / remove-mentioned, candidates."""

import math

import numpy as np
import pytest
import torch

from helpers import single_thread  # noqa: F401
from lmrec.data.conversations import CRSSample
from lmrec.errors import LmrecError
from lmrec.eval.crs import evaluate_crs


def sample(targets, mentioned=(), conv="c", turn=1) -> CRSSample:
    return CRSSample(conv, turn, "User: hi", list(mentioned), list(targets), [t not in mentioned for t in targets])


def table_scorer(rows):
    """Scorer returning row ``turn_id`` of a fixed score table."""
    table = torch.as_tensor(np.asarray(rows, dtype=np.float32))
    return lambda samples: table[[s.turn_id for s in samples]]


def constant_scorer(n_items):
    return lambda samples: torch.zeros(len(samples), n_items)


def inv(r):  # discount of a 0-based rank
    return 1.0 / math.log2(r + 2)


# scores of 5 items; target 2 has g = 1 item above it (item 0) and e = 2 items at its score (items 2, 3)
SCORES = [[3.0, 1.0, 2.0, 2.0, 0.0]]


def test_expected_ties_by_hand():
    result = evaluate_crs(table_scorer(SCORES), [sample([2], turn=0)], 5, ks=(1, 2, 3), ties="expected")
    m = {k: float(v[0]) for k, v in result.per_pair.items()}
    # the rank is 1 or 2 with probability 1/2 each
    assert m["hr@1"] == 0.0
    assert m["hr@2"] == pytest.approx(0.5)
    assert m["hr@3"] == pytest.approx(1.0)
    assert m["ndcg@1"] == 0.0
    assert m["ndcg@2"] == pytest.approx(inv(1) / 2)
    assert m["ndcg@3"] == pytest.approx((inv(1) + inv(2)) / 2)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert result.ranks.tolist() == [2]  # the average rule, kept for analyses


def test_average_ties_by_hand():
    result = evaluate_crs(table_scorer(SCORES), [sample([2], turn=0)], 5, ks=(1, 2, 3), ties="average")
    m = {k: float(v[0]) for k, v in result.per_pair.items()}
    # official rule: rank = floor((#{s > s+} + #{s >= s+}) / 2) = floor((1 + 3) / 2) = 2
    assert (m["hr@1"], m["hr@2"], m["hr@3"]) == (0.0, 0.0, 1.0)
    assert m["ndcg@3"] == pytest.approx(inv(2))
    assert m["mrr"] == pytest.approx(1 / 3)


def test_untied_target_is_the_same_under_both_policies():
    for ties in ("expected", "average"):
        result = evaluate_crs(table_scorer(SCORES), [sample([1], turn=0)], 5, ks=(3, 4), ties=ties)
        assert result.per_pair["hr@3"][0] == 0.0 and result.per_pair["hr@4"][0] == 1.0
        assert result.per_pair["ndcg@4"][0] == pytest.approx(inv(3))


def test_constant_scorer_is_exactly_random_under_expected_ties():
    n = 8
    samples = [sample([i % n, (i + 3) % n], conv=f"c{i}") for i in range(10)]
    result = evaluate_crs(constant_scorer(n), samples, n, ks=(1, 5, 8), ties="expected")
    for k in (1, 5, 8):
        assert np.allclose(result.per_pair[f"hr@{k}"], k / n)
        assert np.allclose(result.per_pair[f"ndcg@{k}"], sum(inv(r) for r in range(k)) / n)
    assert np.allclose(result.per_pair["mrr"], sum(1 / (r + 1) for r in range(n)) / n)
    assert result.summary()["hr@5"].mean == pytest.approx(5 / 8)
    assert result.summary()["hr@5"].se == pytest.approx(0.0)
    # the official rule puts every target at rank floor(n / 2) = 4
    avg = evaluate_crs(constant_scorer(n), samples, n, ks=(4, 5), ties="average")
    assert np.all(avg.per_pair["hr@4"] == 0.0) and np.all(avg.per_pair["hr@5"] == 1.0)


# item 0 was mentioned and scores highest; targets: 0 (repeated) and 3 (new)
MENTION_SCORES = [[9.0, 1.0, 2.0, 5.0, 0.0]]


def test_all_targets_rank_every_item_by_default():
    s = sample([0, 3], mentioned=[0], turn=0)
    result = evaluate_crs(table_scorer(MENTION_SCORES), [s], 5, ks=(1, 2))
    assert result.pairs.tolist() == [[0, 0, 0], [0, 3, 1]]
    assert result.per_pair["hr@1"].tolist() == [1.0, 0.0]  # target 3 is behind the mentioned item 0
    assert result.protocol["targets"] == "all"


def test_new_only_keeps_new_targets_and_remove_mentioned_lifts_them():
    s = sample([0, 3], mentioned=[0], turn=0)
    kept = evaluate_crs(table_scorer(MENTION_SCORES), [s], 5, ks=(1,), new_only=True)
    assert kept.pairs.tolist() == [[0, 3, 1]]
    assert kept.per_pair["hr@1"].tolist() == [0.0]
    removed = evaluate_crs(table_scorer(MENTION_SCORES), [s], 5, ks=(1,), new_only=True, remove_mentioned=True)
    assert removed.per_pair["hr@1"].tolist() == [1.0]  # item 0 is out of the ranking
    assert removed.protocol["mentioned_items"] == "removed from the ranking"


def test_remove_mentioned_never_removes_the_target():
    # the repeated target 0 is itself mentioned (with item 1): it stays in the ranking with its own score
    s = sample([0], mentioned=[0, 1], turn=0)
    result = evaluate_crs(table_scorer(MENTION_SCORES), [s], 5, ks=(1, 2), remove_mentioned=True)
    assert result.per_pair["hr@1"].tolist() == [1.0]
    assert result.ranks.tolist() == [0]
    # a constant scorer with the mentioned items removed: the target is tied with the 3 non-mentioned items
    const = evaluate_crs(constant_scorer(5), [s], 5, ks=(1, 2), remove_mentioned=True)
    assert np.allclose(const.per_pair["hr@1"], 1 / 4) and np.allclose(const.per_pair["hr@2"], 2 / 4)
    # new targets with the mentioned items removed: a target is never removed, even with ties at -inf around
    s2 = sample([3, 4], mentioned=[0, 1], turn=0)
    new = evaluate_crs(table_scorer(MENTION_SCORES), [s2], 5, ks=(1, 3), new_only=True, remove_mentioned=True)
    assert new.per_pair["hr@1"].tolist() == [1.0, 0.0]  # 3 first; 4 behind 3 and 2
    assert new.ranks.tolist() == [0, 2]


def test_remove_mentioned_removes_a_repeated_target_from_the_other_pairs():
    s = sample([0, 3], mentioned=[0], turn=0)  # pair (turn, 3): item 0 is mentioned and not this pair's target
    result = evaluate_crs(table_scorer(MENTION_SCORES), [s], 5, ks=(1,), remove_mentioned=True)
    assert result.per_pair["hr@1"].tolist() == [1.0, 1.0]


def test_candidates_restrict_the_ranking():
    s = sample([3], turn=0)
    full = evaluate_crs(table_scorer(MENTION_SCORES), [s], 5, ks=(1, 2))
    assert full.per_pair["hr@1"].tolist() == [0.0]
    restricted = evaluate_crs(table_scorer(MENTION_SCORES), [s], 5, ks=(1, 2), candidates=np.array([1, 2, 3]))
    assert restricted.per_pair["hr@1"].tolist() == [1.0]  # item 0 is not a candidate
    assert restricted.protocol["ranking"] == "3 candidate items"
    const = evaluate_crs(constant_scorer(10), [sample([3, 4], turn=0)], 10, ks=(1, 2), candidates=np.arange(2, 6))
    assert np.allclose(const.per_pair["hr@1"], 1 / 4) and np.allclose(const.per_pair["hr@2"], 2 / 4)


def test_batches_do_not_change_results():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(12, 20)).round(1)  # rounding makes ties
    samples = [sample(rng.choice(20, 2, replace=False).tolist(), conv=f"c{i}", turn=i) for i in range(12)]
    a = evaluate_crs(table_scorer(table), samples, 20, batch_size=1)
    b = evaluate_crs(table_scorer(table), samples, 20, batch_size=64)
    for key in a.per_pair:
        assert np.array_equal(a.per_pair[key], b.per_pair[key])
    assert a.summary()["hr@10"].n == 24


def test_errors():
    s = [sample([1], turn=0)]
    with pytest.raises(LmrecError, match="shape"):
        evaluate_crs(constant_scorer(4), s, 5)
    with pytest.raises(LmrecError, match="NaN"):
        evaluate_crs(lambda ss: torch.full((len(ss), 5), math.nan), s, 5)
    with pytest.raises(LmrecError, match="no \\(turn, target\\) pairs"):
        evaluate_crs(constant_scorer(5), [sample([1], mentioned=[1], turn=0)], 5, new_only=True)
    with pytest.raises(ValueError, match="tie policy"):
        evaluate_crs(constant_scorer(5), s, 5, ties="optimistic")
