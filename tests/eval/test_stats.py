"""Means, standard errors and paired tests."""

import math

import numpy as np
import pytest

from lmrec.eval.stats import Estimate, estimate, paired_test, summarize


def test_estimate_mean_and_se_with_ddof_1():
    est = estimate(np.array([1.0, 2.0, 3.0, 6.0]))
    # mean 3, sample variance ((4+1+0+9)/3) = 14/3, SE = sqrt(14/3)/2
    assert est.mean == pytest.approx(3.0)
    assert est.se == pytest.approx(math.sqrt(14 / 3) / 2)
    assert est.n == 4
    lo, hi = est.ci95
    assert lo == pytest.approx(3.0 - 1.96 * est.se) and hi == pytest.approx(3.0 + 1.96 * est.se)
    assert est.as_dict() == {"mean": est.mean, "se": est.se, "n": 4}


def test_estimate_of_binary_values():
    est = estimate(np.array([0, 1, 1, 1]))  # mean .75, s^2 = (0.5625 + 3*0.0625)/3 = 0.25
    assert est.mean == pytest.approx(0.75)
    assert est.se == pytest.approx(0.5 / 2)


def test_single_value_has_zero_se_and_empty_is_nan():
    assert estimate(np.array([0.4])) == Estimate(0.4, 0.0, 1)
    empty = estimate(np.array([]))
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.se)


def test_summarize_per_metric():
    out = summarize({"a": np.array([1.0, 3.0]), "b": np.array([2.0])})
    assert out["a"].mean == pytest.approx(2.0) and out["a"].se == pytest.approx(1.0)
    assert out["b"] == Estimate(2.0, 0.0, 1)


def test_paired_test_identical_inputs():
    a = np.random.default_rng(0).random(50)
    result = paired_test(a, a.copy())
    assert result.t_pvalue == 1.0 and result.wilcoxon_pvalue == 1.0
    assert result.diff.mean == 0.0 and result.diff.n == 50


def test_paired_test_constant_nonzero_difference_has_t_p_zero():
    a = np.zeros(12)
    result = paired_test(a, a + 1.0)
    assert result.t_pvalue == 0.0 and result.wilcoxon_pvalue < 0.01 and result.diff.mean == 1.0
    assert np.isnan(paired_test(np.zeros(1), np.ones(1)).t_pvalue)  # one pair: the t-test is undefined


def test_paired_test_clear_shift_and_direction():
    rng = np.random.default_rng(1)
    a = rng.random(100)
    b = a + 0.2 + 0.05 * rng.standard_normal(100)
    result = paired_test(a, b)
    assert result.t_pvalue < 1e-10 and result.wilcoxon_pvalue < 1e-10
    assert result.diff.mean == pytest.approx(np.mean(b - a))
    assert result.diff.mean > 0  # b - a


def test_paired_test_no_shift_is_not_significant():
    rng = np.random.default_rng(2)
    a = rng.random(200)
    b = a + 0.05 * rng.standard_normal(200)  # zero-mean noise only
    result = paired_test(a, b)
    assert result.t_pvalue > 0.01 and result.wilcoxon_pvalue > 0.01


def test_paired_test_shape_mismatch():
    with pytest.raises(ValueError, match="same users"):
        paired_test(np.zeros(3), np.zeros(4))


def test_cluster_bootstrap_se():
    """Clusters of identical values: the bootstrap SE is the SE over cluster means (here 3x the values of one
    cluster carry no more information than one); one value per cluster: the per-value SE, shrunk by the bootstrap's
    sqrt((C-1)/C); one cluster: 0; n counts clusters."""
    from lmrec.eval.stats import cluster_bootstrap, estimate

    rng = np.random.default_rng(1)
    means = rng.random(200)
    clustered = cluster_bootstrap(np.repeat(means, 3), np.repeat(np.arange(200), 3), n_boot=4000)
    assert clustered.n == 200 and clustered.mean == pytest.approx(means.mean())
    assert clustered.se == pytest.approx(estimate(means).se, rel=0.08)
    assert estimate(np.repeat(means, 3)).se < 0.65 * clustered.se  # the per-pair SE is too small
    single = cluster_bootstrap(means, np.arange(200).astype(str), n_boot=4000)
    assert single.se == pytest.approx(estimate(means).se * np.sqrt(199 / 200), rel=0.08)
    assert cluster_bootstrap(np.array([1.0, 0.0]), np.array(["a", "a"])).se == 0.0
    with pytest.raises(ValueError, match="3 values but 2 cluster labels"):
        cluster_bootstrap(np.ones(3), np.array([0, 1]))
