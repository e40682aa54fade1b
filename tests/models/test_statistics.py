"""Intervals, Holm's correction and paired verdicts over folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neural_eq_morphing.models.statistics import (
    BETTER,
    IDENTICAL,
    SAME,
    WORSE,
    fold_means,
    holm,
    paired_verdicts,
    summarise,
    t_interval,
)


def test_t_interval_matches_scipy():
    values = [0.1, 0.4, 0.35, 0.2, 0.5]
    mean, low, high = t_interval(values)
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(expected)
    assert np.isnan(t_interval([1.0])[1])


def test_holm_steps_down_and_keeps_order():
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for f in range(8):
        base = rng.normal(0, 1)
        for seed in (1, 2):
            rows.append(
                {
                    "configuration": "model",
                    "fold": f,
                    "seed": seed,
                    "good": base + 1.0 + 0.01 * seed,
                    "err": base + 0.001 * seed,
                }
            )
        rows.append(
            {
                "configuration": "baseline",
                "fold": f,
                "seed": -1,
                "good": base,
                "err": base + rng.normal(0, 0.5),
            }
        )
    return pd.DataFrame(rows)


def test_seeds_are_averaged_within_a_fold_before_the_interval():
    table = _table()
    means = fold_means(table, ["good"])
    assert len(means) == 16
    summary = summarise(table, ["good"]).set_index("configuration")
    assert summary.loc["model", "n_folds"] == 8
    assert summary.loc["model", "n_seeds"] == 2
    per_fold = table[table.configuration == "model"].groupby("fold")["good"].mean()
    assert summary.loc["model", "mean"] == pytest.approx(per_fold.mean())


def test_paired_verdicts_follow_the_direction_and_the_correction():
    means = fold_means(_table(), ["good", "err"])
    comparisons = [
        {"family": "f", "configuration": "model", "against": "baseline", "metric": "good"},
        {"family": "f", "configuration": "model", "against": "baseline", "metric": "err"},
        {"family": "g", "configuration": "baseline", "against": "model", "metric": "good"},
        {"family": "h", "configuration": "model", "against": "model", "metric": "good"},
    ]
    verdicts = paired_verdicts(means, comparisons, {"good": "higher", "err": "lower"}).set_index(
        ["family", "metric"]
    )
    assert verdicts.loc[("f", "good"), "verdict"] == BETTER
    assert verdicts.loc[("f", "good"), "difference"] == pytest.approx(1.015)
    assert verdicts.loc[("f", "err"), "verdict"] == SAME  # noise only
    assert verdicts.loc[("g", "good"), "verdict"] == WORSE
    assert verdicts.loc[("h", "good"), "verdict"] == IDENTICAL
    assert verdicts.loc[("f", "err"), "p_holm"] >= verdicts.loc[("f", "err"), "p_value"]


def test_adjusted_intervals_exclude_zero_exactly_when_the_verdict_does():
    rng = np.random.default_rng(5)
    folds = [f"f{i}" for i in range(9)]
    rows, comparisons = [], []
    for k, shift in enumerate(np.linspace(0.0, 1.2, 12)):
        name = f"m{k}"
        noise = rng.normal(0.0, 1.0, 9)
        rows += [
            {"configuration": name, "fold": f, "score": shift + e}
            for f, e in zip(folds, noise, strict=True)
        ]
        comparisons.append(
            {"family": "one", "configuration": name, "against": "base", "metric": "score"}
        )
    rows += [{"configuration": "base", "fold": f, "score": 0.0} for f in folds]
    verdicts = paired_verdicts(pd.DataFrame(rows), comparisons, {"score": "higher"}, alpha=0.05)
    decided = verdicts["verdict"].isin([BETTER, WORSE])
    excludes = (verdicts["ci_low"] > 0) | (verdicts["ci_high"] < 0)
    assert decided.any()
    assert (~decided).any()
    assert (decided == excludes).all()
    # the adjusted interval is wider than the unadjusted 95 % one
    assert (verdicts["ci_level"] >= 0.95).all()
    # the smallest detectable difference grows with the family's size (Holm's strictest level)
    single = paired_verdicts(pd.DataFrame(rows), comparisons[:1], {"score": "higher"})
    assert single["detectable"].iloc[0] < verdicts["detectable"].iloc[0]


def test_a_share_gets_a_bootstrap_interval_inside_its_range():
    folds = pd.DataFrame(
        {
            "configuration": "m",
            "fold": [f"f{i}" for i in range(5)],
            "share": [1.0, 1.0, 1.0, 1.0, 0.6],
        }
    )
    bounded = summarise(folds, ["share"], 0.95, bounded=["share"], seed=1).iloc[0]
    plain = summarise(folds, ["share"], 0.95).iloc[0]
    assert plain["ci_high"] > 1.0  # the t-interval leaves the range
    assert 0.6 <= bounded["ci_low"] <= bounded["ci_high"] <= 1.0
    assert bounded["mean"] == pytest.approx(0.92)
