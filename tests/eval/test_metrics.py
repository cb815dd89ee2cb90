"""Top-K metrics on hand-computed hit matrices."""

import math

import numpy as np
import pytest

from lmrec.eval import metrics as M

# user 0: hits at ranks 1 and 3 of 4, |T| = 3; user 1: first hit at rank 2, |T| = 1; user 2: no hit, |T| = 2
HITS = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
N_T = np.array([3, 1, 2])
LOG2 = math.log2


def test_recall_by_hand():
    np.testing.assert_allclose(M.recall(HITS, N_T, 4), [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(M.recall(HITS, N_T, 2), [1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(M.recall(HITS, N_T, 1), [1 / 3, 0.0, 0.0])


def test_recall_denominator_is_not_capped_at_k():
    hits = np.ones((1, 2), dtype=bool)  # both ranked items are targets, but |T| = 10
    assert M.recall(hits, np.array([10]), 2)[0] == pytest.approx(0.2)


def test_precision_by_hand():
    np.testing.assert_allclose(M.precision(HITS, N_T, 4), [0.5, 0.25, 0.0])
    np.testing.assert_allclose(M.precision(HITS, N_T, 1), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(M.precision(HITS, N_T, 3), [2 / 3, 1 / 3, 0.0])


def test_hit_rate_by_hand():
    np.testing.assert_array_equal(M.hit_rate(HITS, N_T, 4), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(M.hit_rate(HITS, N_T, 1), [1.0, 0.0, 0.0])


def test_mrr_by_hand():
    np.testing.assert_allclose(M.mrr(HITS, N_T, 4), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(M.mrr(HITS, N_T, 1), [1.0, 0.0, 0.0])  # user 1's hit is beyond K=1
    hits = np.array([[0, 0, 1, 1]], dtype=bool)
    assert M.mrr(hits, np.array([2]), 4)[0] == pytest.approx(1 / 3)  # first hit counts, not the best one


def test_ndcg_by_hand():
    user0 = (1 + 1 / LOG2(4)) / (1 + 1 / LOG2(3) + 1 / LOG2(4))  # IDCG over min(|T|=3, K=4) = 3 positions
    user1 = (1 / LOG2(3)) / 1.0
    np.testing.assert_allclose(M.ndcg(HITS, N_T, 4), [user0, user1, 0.0])
    # K=2: user 0 has its hit at rank 1 and |T|=3 > K, so IDCG uses min(3, 2) = 2 positions
    np.testing.assert_allclose(M.ndcg(HITS, N_T, 2), [1 / (1 + 1 / LOG2(3)), 1 / LOG2(3), 0.0])


def test_ndcg_ideal_uses_min_of_targets_and_k():
    hits = np.ones((1, 3), dtype=bool)  # a perfect list of 3 with 10 targets is ideal at K=3
    assert M.ndcg(hits, np.array([10]), 3)[0] == pytest.approx(1.0)
    one = np.array([[0, 1, 0]], dtype=bool)  # single target at rank 2: DCG = IDCG * 1/log2(3)
    assert M.ndcg(one, np.array([1]), 3)[0] == pytest.approx(1 / LOG2(3))


def test_metrics_bounded_in_unit_interval_on_random_hits():
    rng = np.random.default_rng(0)
    hits = rng.random((200, 10)) < 0.3
    n_targets = np.maximum(hits.sum(axis=1), 1) + rng.integers(0, 5, 200)
    for name, values in M.compute(hits, n_targets, tuple(M.METRICS), (1, 5, 10)).items():
        assert values.shape == (200,), name
        assert ((values >= 0) & (values <= 1 + 1e-12)).all(), name


@pytest.mark.parametrize("k", [0, -1, 5])
def test_k_out_of_range_is_an_error(k):
    for fn in M.METRICS.values():
        with pytest.raises(ValueError, match="K="):
            fn(HITS, N_T, k)


def test_compute_names_and_unknown_metric():
    out = M.compute(HITS, N_T, ("recall", "ndcg"), (2, 4))
    assert set(out) == {"recall@2", "recall@4", "ndcg@2", "ndcg@4"}
    np.testing.assert_allclose(out["recall@4"], M.recall(HITS, N_T, 4))
    with pytest.raises(ValueError, match="auc"):
        M.compute(HITS, N_T, ("recall", "auc"), (4,))
