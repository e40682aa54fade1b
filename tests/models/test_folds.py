"""Folds grouped by contributor: no contributor in two parts, on fixtures and the real file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.models.folds import (
    FOLD_COLUMNS,
    contributor_folds,
    fold_assignment,
    fold_names,
    fold_summary,
)

FOLDS = {"min_rows": 50, "k": 3, "validation_fraction": 0.15, "seed": 0}


def _rows(sizes: dict[str, int]) -> pd.DataFrame:
    records = []
    for contributor, size in sizes.items():
        for i in range(size):
            records.append(
                {
                    "entry_id": f"{contributor}-{i}",
                    "contributor_id": contributor,
                    "term": "warm" if i % 2 else "bright",
                }
            )
    return pd.DataFrame(records)


@pytest.fixture
def rows() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    sizes = {"big1": 120, "big2": 60}
    sizes |= {f"c{i:02d}": int(n) for i, n in enumerate(rng.integers(2, 20, 15))}
    return _rows(sizes)


def _check_disjoint(table: pd.DataFrame, rows: pd.DataFrame) -> None:
    contributors = set(rows["contributor_id"])
    for fold in fold_names(table):
        parts = table[table["fold"] == fold]
        # every contributor exactly once per fold: never in two parts
        assert sorted(parts["contributor_id"]) == sorted(contributors)
        assignment = fold_assignment(table, rows, fold)
        by_contributor = assignment.groupby("contributor_id")["split"].nunique()
        assert (by_contributor == 1).all()
        assert set(assignment["split"]) == {"train", "validation", "test"}


def test_leave_one_out_for_large_contributors_then_k_grouped_folds(rows):
    table = contributor_folds(rows, FOLDS)
    assert list(table.columns) == list(FOLD_COLUMNS)
    assert fold_names(table) == ["loco-big1", "loco-big2", "group-1", "group-2", "group-3"]
    test_of = table[table["part"] == "test"].groupby("fold")["contributor_id"].apply(set)
    assert test_of["loco-big1"] == {"big1"}
    # the grouped folds' test parts cover every small contributor exactly once
    grouped = [test_of[f"group-{i}"] for i in (1, 2, 3)]
    small = set(rows["contributor_id"]) - {"big1", "big2"}
    assert set().union(*grouped) == small
    assert sum(len(g) for g in grouped) == len(small)
    _check_disjoint(table, rows)


def test_validation_part_is_grouped_near_its_fraction_and_never_a_large_session(rows):
    table = contributor_folds(rows, FOLDS)
    for fold in fold_names(table):
        parts = table[table["fold"] == fold]
        validation = parts[parts["part"] == "validation"]
        training = parts[parts["part"] != "test"]["rows"].sum()
        assert not validation["contributor_id"].isin(["big1", "big2"]).any()
        assert 0.05 * training < validation["rows"].sum() < 0.3 * training


def test_same_seed_same_folds_other_seed_other_groups(rows):
    first, again = contributor_folds(rows, FOLDS), contributor_folds(rows, FOLDS)
    pd.testing.assert_frame_equal(first, again)
    other = contributor_folds(rows, {**FOLDS, "seed": 1})
    assert not first.equals(other)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k": 40}, "grouped folds need at least 40 contributors"),
        ({"min_rows": 0}, "min_rows must be at least 1"),
        ({"validation_fraction": 1.5}, "validation_fraction must lie in"),
        ({"min_rows": 1000, "k": 0}, "no fold"),
    ],
)
def test_bad_fold_settings_say_what_was_expected(rows, change, message):
    with pytest.raises(ValueError, match=message):
        contributor_folds(rows, {**FOLDS, **change})


def test_unknown_fold_is_named(rows):
    with pytest.raises(ValueError, match="unknown fold 'nope'"):
        fold_assignment(contributor_folds(rows, FOLDS), rows, "nope")


@pytest.mark.integration
def test_real_file_folds_hold_no_contributor_in_two_parts(real_descriptor_settings):
    settings = real_descriptor_settings
    table = contributor_folds(
        settings, {"min_rows": 50, "k": 5, "validation_fraction": 0.15, "seed": 42}
    )
    _check_disjoint(table, settings)
    summary = fold_summary(table, settings)
    loco = summary[summary["kind"] == "leave_one_out"]
    # four sessions of at least 50 rows, held out one at a time, largest first
    assert len(loco) == 4
    assert loco["test_rows"].tolist() == sorted(loco["test_rows"], reverse=True)
    assert (
        summary["train_rows"] + summary["validation_rows"] + summary["test_rows"] == len(settings)
    ).all()
