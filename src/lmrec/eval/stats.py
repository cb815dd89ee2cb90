"""Means with standard errors, confidence intervals and paired tests over per-user (per-turn) values."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """Mean of n values with standard error SE = s / sqrt(n), s the sample std (ddof=1)."""

    mean: float
    se: float
    n: int

    @property
    def ci95(self) -> tuple[float, float]:
        """Normal-approximation 95% interval: mean ± 1.96·SE."""
        return self.mean - 1.96 * self.se, self.mean + 1.96 * self.se

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "se": self.se, "n": self.n}

    def __str__(self) -> str:
        from lmrec.eval.report import estimate_cell

        return estimate_cell(self)


def estimate(values: np.ndarray) -> Estimate:
    """Mean and SE of ``values`` (SE is 0 for a single value, NaN for none)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return Estimate(float(values.mean()), se, n)


def summarize(per_user: dict[str, np.ndarray]) -> dict[str, Estimate]:
    return {name: estimate(values) for name, values in per_user.items()}


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of two systems on the same users: mean difference (b - a), its SE and p-values."""

    diff: Estimate
    t_pvalue: float
    wilcoxon_pvalue: float


def paired_test(a: np.ndarray, b: np.ndarray) -> PairedTest:
    """Two-sided paired t-test and Wilcoxon signed-rank test of b against a (same users, same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired test needs values for the same users: shapes {a.shape} and {b.shape}")
    diff = b - a
    if not diff.any():
        return PairedTest(estimate(diff), 1.0, 1.0)
    from scipy import stats as sps  # imported here: scipy.stats takes a second to import

    if len(diff) < 2:  # one pair: no variance to test against
        t_p = float("nan")
    elif np.all(diff == diff[0]):  # every difference equal, not 0: t is infinite (scipy would warn, may give nan)
        t_p = 0.0
    else:
        t_p = float(sps.ttest_rel(b, a).pvalue)
    w_p = float(sps.wilcoxon(b, a, zero_method="wilcox").pvalue)  # zero differences dropped (standard)
    return PairedTest(estimate(diff), t_p, w_p)


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """Mean of ``values`` with the SE of a bootstrap over clusters (e.g. the (turn, target) pairs of one dialogue).

    Each of ``n_boot`` resamples draws the C clusters with replacement and takes the pooled mean of their values,
    Σ sums / Σ counts; SE = the standard deviation (ddof=1) of those means. Values of one cluster are not
    independent (they share a context), so this SE is the honest one where the per-value SE assumes independence.
    ``n`` of the result is the number of clusters. One cluster: SE 0; no values: NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(clusters):
        raise ValueError(f"cluster_bootstrap: {len(values)} values but {len(clusters)} cluster labels")
    if len(values) == 0:
        return Estimate(math.nan, math.nan, 0)
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(index, weights=values)
    counts = np.bincount(index).astype(np.float64)
    mean = float(values.mean())
    if len(sums) < 2:
        return Estimate(mean, 0.0, len(sums))
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(n_boot, len(sums)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return Estimate(mean, float(means.std(ddof=1)), len(sums))
