"""Paired tests, Holm correction and bootstrap confidence intervals for the report tables.

Choices (also in ``docs/reports.md``):

- Wilcoxon signed-rank, paired over the cases both methods were scored on (NaN pairs dropped),
  two-sided, ``zero_method="wilcox"``: a zero difference (e.g. both methods perfect on a case with
  an empty reference) says nothing about which method is better, so it is left out of the ranking.
  When every difference is zero the p-value is 1. p-values are those of ``scipy.stats.wilcoxon``
  with ``method="auto"``: exact without ties (n <= 50), normal approximation above 50, and an
  exhaustive sign-flip permutation test for n <= 13 with ties (computed here in one matrix
  product, since scipy's batched permutation test took seconds per table).
- Holm's step-down correction over all comparisons of one table (every subset, the Avg. row, every
  region, every method against the baseline): the family is the table a reader scans.
- Bootstrap: cases are resampled with replacement (the same draw for every subset of a case, since a
  case's subsets are not independent); the statistic is the table's Avg. (mean over subsets of the
  mean over cases); percentile interval; seeded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import wilcoxon

ALPHA = 0.05


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order as given; NaN stays NaN).

    The adjusted value of the k-th smallest of m p-values is ``max_{j<=k} min(1, (m-j+1) p_(j))``.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    order = np.argsort(p[ok], kind="stable")
    scaled = (m - np.arange(m)) * p[ok][order]
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled))
    valid = np.empty(m)
    valid[order] = adjusted
    out[ok] = valid
    return out


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank test of paired samples.

    Returns:
        ``(p, n)``: the p-value (1.0 when all differences are zero, NaN when no pair is usable) and
        the number of usable pairs.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.shape} vs {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    d = x[keep] - y[keep]
    n = int(d.size)
    if n == 0:
        return float("nan"), 0
    d = d[d != 0]
    if d.size == 0:
        return 1.0, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(res.pvalue), n


def paired_wilcoxon_many(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> np.ndarray:
    """:func:`paired_wilcoxon` p-values for many pairs of samples at once.

    Pairs with the same number of non-zero differences go to scipy as one batch (one call per
    length instead of one per test); the p-values equal those of separate calls.
    """
    p = np.full(len(pairs), np.nan)
    diffs: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, (a, b) in enumerate(pairs):
        x = np.asarray(a, dtype=float)
        y = np.asarray(b, dtype=float)
        if x.shape != y.shape:
            raise ValueError(f"paired samples differ in length: {x.shape} vs {y.shape}")
        d = x - y
        d = d[~np.isnan(d)]
        if d.size == 0:
            continue
        d = d[d != 0]
        if d.size == 0:
            p[i] = 1.0
            continue
        diffs.setdefault(d.size, []).append((i, d))
    for m, items in diffs.items():
        mat = np.stack([d for _, d in items])
        index = np.array([i for i, _ in items])
        tied = np.array([np.unique(np.abs(row)).size < m for row in mat])
        if m <= _SIGN_FLIP_MAX_N and tied.any():
            # scipy's "auto" would run its (slow, batch-unfriendly) permutation test here
            p[index[tied]] = _sign_flip_pvalues(mat[tied])
            mat, index = mat[~tied], index[~tied]
        if len(index):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = wilcoxon(mat, axis=1, zero_method="wilcox")
            p[index] = np.atleast_1d(res.pvalue)
    return p


_SIGN_FLIP_MAX_N = 13
"""Below this many non-zero differences with ties, scipy's ``wilcoxon(method="auto")`` uses an
exhaustive sign-flip permutation test; :func:`_sign_flip_pvalues` computes the same p-values."""


def _sign_flip_pvalues(d: np.ndarray) -> np.ndarray:
    """Two-sided p-values of the signed-rank statistic over all 2**n sign flips, per row.

    Same definition as scipy's permutation test for ``wilcoxon``: twice the smaller one-sided
    p-value (capped at 1), with scipy's relative tolerance when comparing statistics.
    """
    from scipy.stats import rankdata

    n = d.shape[1]
    ranks = rankdata(np.abs(d), axis=1)
    observed = np.where(d > 0, ranks, 0.0).sum(axis=1)
    flips = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    null = ranks @ flips.T.astype(float)  # rows x 2**n statistics
    # scipy.stats.permutation_test compares statistics with a relative tolerance of 1e-14
    gamma = np.abs(1e-14 * observed)[:, None]
    greater = (null >= observed[:, None] - gamma).mean(axis=1)
    less = (null <= observed[:, None] + gamma).mean(axis=1)
    return np.minimum(1.0, 2.0 * np.minimum(greater, less))


def min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided p-value of an exact Wilcoxon signed-rank test on ``n`` non-zero paired
    differences: ``2 / 2**n``, reached when all differences have the same sign."""
    return min(1.0, 2.0 / 2.0**n) if n > 0 else 1.0


def paired_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, int]:
    """Two-sided paired t-test (e.g. per-seed averages of two methods over shared seeds).

    Returns:
        ``(p, n)``: NaN p when fewer than two pairs or no variation of the differences.
    """
    from scipy.stats import ttest_rel

    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    n = int(keep.sum())
    d = x[keep] - y[keep]
    if n < 2 or np.allclose(d, d[0]):
        return (float("nan") if n < 2 or d[0] != 0 else 1.0), n
    return float(ttest_rel(x[keep], y[keep]).pvalue), n


def bootstrap_avg_ci(
    matrix: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the Avg. of a cases × subsets matrix.

    Args:
        matrix: per-case values, one row per case, one column per subset (NaN = excluded).
        n_boot: resamples.
        level: coverage of the interval.
        seed: seed of the generator; the same seed and case count give the same resamples, so
            intervals of methods scored on the same cases come from paired draws.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim == 1:
        m = m[:, None]
    n = m.shape[0]
    if n == 0 or np.all(np.isnan(m)):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    if not np.isnan(m).any():
        # Balanced matrix: mean over subsets of means over cases = mean of per-case row means.
        stats = m.mean(axis=1)[idx].mean(axis=1)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = np.nanmean(np.nanmean(m[idx], axis=1), axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(stats, [tail, 1.0 - tail])
    return float(lo), float(hi)
