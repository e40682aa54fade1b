"""Intervals, paired differences and corrected verdicts over folds (docs/design.md section 6).

The unit of replication is the fold: contributors differ far more than initialisations
do, so seeds are averaged within a fold first ("seeds nested") and every interval is a
Student-t interval over the folds' values. Two configurations are compared on the same
folds, so the comparison is paired: the per-fold difference, its mean with a t-interval,
and a two-sided one-sample t-test of the differences. Within each *family* of verdicts
the p-values are adjusted with Holm's step-down method, and a verdict is ``better`` or
``worse`` only when the adjusted p-value is below ``alpha``; otherwise ``no detectable
difference``. Verdicts whose adjusted p-value lies within a factor of two of ``alpha``
are flagged *borderline*: a rerun on another CPU (round-off differs in the third digit)
may move them across the line.

The interval of a paired difference is *adjusted the same way as its verdict*: it is the
t-interval at level ``1 − alpha · p / p_Holm``, the level at which Holm's procedure
effectively tested that comparison, so it excludes zero exactly when the verdict is
``better`` or ``worse``. Each comparison also states the *smallest detectable
difference*: the true mean difference the paired t-test would detect with probability
``power`` at its fold count and at Holm's strictest level (``alpha`` over the family's
size), from the per-fold spread of the differences. A summary interval over folds of a
metric with a bounded range (a share) is a percentile bootstrap of the fold mean, which
stays inside the range; of any other metric, a Student-t interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: Verdict words.
BETTER, WORSE, SAME, IDENTICAL = "better", "worse", "no detectable difference", "identical"


def _finite(values: Sequence[float]) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """The finite values, and the ``(mean, low, high)`` their count already decides.

    No value: all NaN; one value: its mean without an interval; more: ``None``.
    """
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return array, (float("nan"),) * 3
    if array.size == 1:
        return array, (float(array[0]), float("nan"), float("nan"))
    return array, None


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval of ``values`` (NaNs dropped).

    Returns:
        ``(mean, low, high)``; with one value the interval is ``(nan, nan)``, with none
        everything is NaN.
    """
    array, decided = _finite(values)
    if decided is not None:
        return decided
    mean = float(array.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, array.size - 1) * stats.sem(array))
    return mean, mean - half, mean + half


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaNs stay NaN and do not count as tests)."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def fold_means(fold_metrics: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Each configuration's value per fold: the mean over its seeds.

    Args:
        fold_metrics: One row per ``configuration``, ``fold`` (and seed), metric columns.
        metrics: The metric columns to keep.

    Returns:
        ``configuration``, ``fold`` and the metrics, in first-appearance order.
    """
    present = [m for m in metrics if m in fold_metrics.columns]
    means = (
        fold_metrics.groupby(["configuration", "fold"], sort=False)[present].mean().reset_index()
    )
    return means


def bootstrap_interval(
    values: Sequence[float], confidence: float, seed: int, resamples: int = 2000
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of the mean of ``values`` (NaNs dropped).

    Every resampled mean lies within the values' range, so the interval respects a
    metric's bounds. With fewer than two values the interval is ``(nan, nan)``.
    """
    array, decided = _finite(values)
    if decided is not None:
        return decided
    mean = float(array.mean())
    rng = np.random.default_rng(int(seed))
    means = array[rng.integers(0, array.size, (int(resamples), array.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return mean, float(low), float(high)


def summarise(
    fold_metrics: pd.DataFrame,
    metrics: Sequence[str],
    confidence: float = 0.95,
    bounded: Sequence[str] = (),
    seed: int = 0,
) -> pd.DataFrame:
    """Mean with its interval over folds for every configuration and metric.

    The interval is a Student-t interval, or for the ``bounded`` metrics (shares) a
    percentile bootstrap of the fold mean seeded by ``seed`` (:func:`bootstrap_interval`).

    Returns:
        Long table: ``configuration``, ``metric``, ``mean``, ``ci_low``, ``ci_high``,
        ``n_folds`` (folds where it is defined), ``n_seeds`` (per fold, at most).
    """
    means = fold_means(fold_metrics, metrics)
    seeds = fold_metrics.groupby(["configuration", "fold"], sort=False).size()
    records = []
    for configuration, rows in means.groupby("configuration", sort=False):
        n_seeds = int(seeds.loc[configuration].max())
        for metric in [m for m in metrics if m in rows.columns]:
            values = rows[metric].to_numpy(np.float64)
            if not np.isfinite(values).any():
                continue
            if metric in bounded:
                mean, low, high = bootstrap_interval(values, confidence, seed)
            else:
                mean, low, high = t_interval(values, confidence)
            records.append(
                {
                    "configuration": configuration,
                    "metric": metric,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n_folds": int(np.isfinite(values).sum()),
                    "n_seeds": n_seeds,
                }
            )
    return pd.DataFrame.from_records(
        records,
        columns=["configuration", "metric", "mean", "ci_low", "ci_high", "n_folds", "n_seeds"],
    )


def improvement(a: np.ndarray, b: np.ndarray, better: str) -> np.ndarray:
    """How much ``a`` is better than ``b`` (positive = better), by the metric's direction.

    ``better`` is ``higher``, ``lower`` or ``one`` (closer to 1 is better).
    """
    if better == "higher":
        return a - b
    if better == "lower":
        return b - a
    if better == "one":
        return np.abs(b - 1.0) - np.abs(a - 1.0)
    raise ValueError(f"unknown direction {better!r}; expected higher, lower or one")


def adjusted_interval(
    differences: np.ndarray, p_value: float, p_holm: float, alpha: float
) -> tuple[float, float, float]:
    """The t-interval of paired differences at Holm's effective level for them.

    The level is ``1 − alpha · p / p_Holm``: the interval excludes zero exactly when
    ``p_Holm < alpha``. Returns ``(level, low, high)``; a constant difference (``p = 0``)
    has the zero-width interval at ``1 − alpha``, identical values NaN.
    """
    mean = float(np.mean(differences))
    if not np.isfinite(p_value):
        return float("nan"), float("nan"), float("nan")
    if p_value == 0.0 or p_holm == 0.0:
        return 1.0 - alpha, mean, mean
    level = 1.0 - alpha * p_value / p_holm
    _, low, high = t_interval(differences, level)
    return level, low, high


def detectable_difference(
    differences: np.ndarray, family_size: int, alpha: float, power: float
) -> float:
    """The smallest true mean difference the paired t-test detects with ``power``.

    ``(t_{1−α/(2m), n−1} + t_{power, n−1}) · sd / √n`` with ``m`` the family's size
    (Holm's first, strictest step) and ``n`` the number of folds; NaN with fewer than two.
    """
    n = len(differences)
    if n < 2 or family_size < 1:
        return float("nan")
    sd = float(np.std(differences, ddof=1))
    critical = stats.t.ppf(1.0 - alpha / (2.0 * family_size), n - 1)
    return float((critical + stats.t.ppf(power, n - 1)) * sd / np.sqrt(n))


def paired_verdicts(
    fold_means_table: pd.DataFrame,
    comparisons: Sequence[Mapping[str, Any]],
    directions: Mapping[str, str],
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """Paired comparisons over folds, Holm-corrected within each family.

    Args:
        fold_means_table: Output of :func:`fold_means` (models and baselines together).
        comparisons: Each ``{"family", "configuration", "against", "metric"}``.
        directions: Per metric, ``higher``, ``lower`` or ``one``.
        alpha: Level of the corrected tests.
        power: The power of the smallest detectable difference.

    Returns:
        One row per comparison: ``family``, ``configuration``, ``against``, ``metric``,
        ``n_folds``, ``difference`` (mean improvement of ``configuration`` over
        ``against``, positive = better), ``ci_low``, ``ci_high`` (adjusted as the
        verdict, :func:`adjusted_interval`), ``ci_level``, ``p_value``, ``p_holm``,
        ``verdict``, ``borderline`` and ``detectable`` (:func:`detectable_difference`).
        Comparisons without two folds where both are defined are left out.
    """
    table = fold_means_table.set_index(["configuration", "fold"])
    records = []
    for comparison in comparisons:
        metric = comparison["metric"]
        a = table.loc[comparison["configuration"], metric]
        b = table.loc[comparison["against"], metric]
        joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
        if len(joined) < 2:
            continue
        diff = improvement(joined["a"].to_numpy(), joined["b"].to_numpy(), directions[metric])
        mean = float(np.mean(diff))
        if np.allclose(diff, 0.0, rtol=0.0, atol=1e-12):
            p_value = float("nan")
        elif np.allclose(diff, diff[0], rtol=0.0, atol=1e-12):
            p_value = 0.0  # a constant non-zero difference: no variance to test against
        else:
            p_value = float(stats.ttest_1samp(diff, 0.0).pvalue)
        records.append(
            {
                "family": comparison["family"],
                "configuration": comparison["configuration"],
                "against": comparison["against"],
                "metric": metric,
                "n_folds": len(joined),
                "difference": mean,
                "p_value": p_value,
                "_differences": diff,
            }
        )
    columns = [
        "family",
        "configuration",
        "against",
        "metric",
        "n_folds",
        "difference",
        "ci_low",
        "ci_high",
        "ci_level",
        "p_value",
        "p_holm",
        "verdict",
        "borderline",
        "detectable",
    ]
    if not records:
        return pd.DataFrame(columns=columns)
    verdicts = pd.DataFrame.from_records(records)
    verdicts["p_holm"] = np.nan
    verdicts["detectable"] = np.nan
    for _, rows in verdicts.groupby("family", sort=False):
        verdicts.loc[rows.index, "p_holm"] = holm(rows["p_value"].to_numpy())
        size = int(np.isfinite(rows["p_value"].to_numpy()).sum())
        for index in rows.index:
            verdicts.loc[index, "detectable"] = detectable_difference(
                verdicts.loc[index, "_differences"], size, alpha, power
            )
    intervals = [
        adjusted_interval(row["_differences"], row["p_value"], row["p_holm"], alpha)
        for _, row in verdicts.iterrows()
    ]
    verdicts["ci_level"], verdicts["ci_low"], verdicts["ci_high"] = (
        [interval[i] for interval in intervals] for i in range(3)
    )

    def word(row: pd.Series) -> str:
        if not np.isfinite(row["p_value"]):
            return IDENTICAL
        if row["p_holm"] < alpha:
            return BETTER if row["difference"] > 0 else WORSE
        return SAME

    verdicts["verdict"] = verdicts.apply(word, axis=1)
    verdicts["borderline"] = verdicts["p_holm"].between(alpha / 2, alpha * 2)
    return verdicts[columns]
