"""Cross-validation folds grouped by contributor (docs/design.md section 6); no Kedro.

A SAFE-DB contributor's rows come from one session (often alternating blocks of two
terms), so rows of one contributor are not independent: a test set that shares a
contributor with the training set measures memory of the session, not generalisation.
Every fold therefore holds each contributor in exactly one part.

:func:`contributor_folds` builds the folds:

* one *leave-one-contributor-out* fold (``loco-<contributor>``) for every contributor
  with at least ``min_rows`` rows: that contributor is the test part;
* ``k`` *grouped* folds (``group-1`` …) over the remaining contributors, balanced by rows:
  each group in turn is the test part;
* inside each fold's training contributors, a grouped validation part of about
  ``validation_fraction`` of the rows (for the LR schedule), drawn with ``seed`` from
  the contributors smaller than that target (each joins when it brings the part closer
  to the target), so no single large session becomes the whole validation part.

The result is the *fold table*: one row per fold and contributor with its part and row
count. :func:`fold_assignment` turns one fold into the ``entry_id`` → split table the
normalisers and model-input tables already use (``train`` / ``validation`` / ``test``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

#: Columns of the fold table, in order.
FOLD_COLUMNS = ("fold", "kind", "contributor_id", "part", "rows")
#: The parts of a fold; they are the split names of the model-input tables.
PARTS = ("train", "validation", "test")


def check_fold_settings(folds: Mapping[str, Any]) -> tuple[int, int, float, int]:
    """Validate ``min_rows``, ``k``, ``validation_fraction`` and ``seed`` of a fold setup.

    Returns:
        The four values, typed.

    Raises:
        ValueError: A value is missing or out of range; the message names the key.
    """
    expected = ("min_rows", "k", "validation_fraction", "seed")
    missing = [key for key in expected if key not in folds]
    if missing:
        raise ValueError(f"the folds need {list(expected)}; missing {missing}")
    min_rows, k = int(folds["min_rows"]), int(folds["k"])
    fraction, seed = float(folds["validation_fraction"]), int(folds["seed"])
    if min_rows < 1:
        raise ValueError(f"folds.min_rows must be at least 1, got {min_rows}")
    if k < 0:
        raise ValueError(f"folds.k must be at least 0 (0: no grouped folds), got {k}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"folds.validation_fraction must lie in (0, 1), got {fraction}")
    return min_rows, k, fraction, seed


def _balanced_groups(rows: pd.Series, k: int, rng: np.random.Generator) -> list[list[str]]:
    """Contributors into ``k`` groups of near-equal rows: largest first, to the lightest."""
    order = np.lexsort((rng.permutation(len(rows)), -rows.to_numpy()))
    groups: list[list[str]] = [[] for _ in range(k)]
    totals = np.zeros(k)
    for position in order:
        lightest = int(np.argmin(totals))
        groups[lightest].append(str(rows.index[position]))
        totals[lightest] += rows.iloc[position]
    return groups


def _validation_part(
    training_rows: pd.Series, fraction: float, rng: np.random.Generator
) -> set[str]:
    """Contributors of the validation part, near ``fraction`` of the training rows.

    Contributors smaller than the target are visited in random order; each joins when it
    brings the total closer to the target.
    """
    target = fraction * float(training_rows.sum())
    candidates = training_rows[training_rows < target]
    chosen: set[str] = set()
    total = 0.0
    for position in rng.permutation(len(candidates)):
        count = float(candidates.iloc[position])
        if abs(total + count - target) < abs(total - target):
            chosen.add(str(candidates.index[position]))
            total += count
    return chosen


def contributor_folds(rows: pd.DataFrame, folds: Mapping[str, Any]) -> pd.DataFrame:
    """The folds of the cross-contributor protocol as a table (see the module docstring).

    Args:
        rows: One row per setting with ``contributor_id`` (the pseudonymous contributor).
        folds: ``min_rows`` (contributors with at least this many rows get their own
            fold), ``k`` (grouped folds over the others), ``validation_fraction`` and
            ``seed``.

    Returns:
        The fold table, columns :data:`FOLD_COLUMNS`: ``fold``, ``kind``
        (``leave_one_out`` or ``grouped``), ``contributor_id``, ``part`` (``train``,
        ``validation`` or ``test``) and ``rows``; every contributor once per fold.

    Raises:
        ValueError: Bad settings, too few contributors for ``k`` grouped folds, or no fold.
    """
    min_rows, k, fraction, seed = check_fold_settings(folds)
    if rows.empty:
        raise ValueError("cannot build folds from an empty table of settings")
    per_contributor = rows["contributor_id"].astype(str).value_counts().sort_index()
    large = per_contributor[per_contributor >= min_rows].sort_values(ascending=False, kind="stable")
    rest = per_contributor[per_contributor < min_rows]
    if k and len(rest) < k:
        raise ValueError(
            f"folds.k = {k} grouped folds need at least {k} contributors with fewer than "
            f"folds.min_rows = {min_rows} rows; there are {len(rest)}"
        )
    rng = np.random.default_rng(seed)
    tests: list[tuple[str, str, set[str]]] = [
        (f"loco-{contributor}", "leave_one_out", {str(contributor)}) for contributor in large.index
    ]
    if k:
        for number, group in enumerate(_balanced_groups(rest, k, rng), start=1):
            tests.append((f"group-{number}", "grouped", set(group)))
    if not tests:
        raise ValueError("no fold: no contributor reaches folds.min_rows and folds.k is 0")
    records = []
    for fold, kind, test in tests:
        training = per_contributor[~per_contributor.index.isin(test)]
        validation = _validation_part(training, fraction, rng)
        for contributor, count in per_contributor.items():
            part = (
                "test"
                if contributor in test
                else "validation"
                if contributor in validation
                else "train"
            )
            records.append((fold, kind, str(contributor), part, int(count)))
    table = pd.DataFrame.from_records(records, columns=list(FOLD_COLUMNS))
    return table.astype(
        {
            "fold": "string",
            "kind": "string",
            "contributor_id": "string",
            "part": "string",
            "rows": np.int64,
        }
    )


def fold_names(fold_table: pd.DataFrame) -> list[str]:
    """The folds of a fold table, in table order."""
    return list(dict.fromkeys(fold_table["fold"].astype(str)))


def fold_assignment(fold_table: pd.DataFrame, rows: pd.DataFrame, fold: str) -> pd.DataFrame:
    """One fold as a split assignment: ``entry_id``, ``contributor_id``, ``term``, ``split``.

    Args:
        fold_table: Output of :func:`contributor_folds`.
        rows: The settings (``entry_id``, ``contributor_id``, ``term``).
        fold: A fold of the table.

    Raises:
        ValueError: Unknown fold, or a contributor of ``rows`` missing from the fold.
    """
    parts = fold_table[fold_table["fold"] == fold]
    if parts.empty:
        raise ValueError(f"unknown fold {fold!r}; the fold table has {fold_names(fold_table)}")
    part_of = dict(zip(parts["contributor_id"].astype(str), parts["part"].astype(str), strict=True))
    assignment = rows[["entry_id", "contributor_id", "term"]].copy()
    assignment["split"] = assignment["contributor_id"].astype(str).map(part_of)
    if assignment["split"].isna().any():
        unknown = sorted(assignment.loc[assignment["split"].isna(), "contributor_id"].unique())
        raise ValueError(f"fold {fold!r} does not place contributor(s) {unknown[:5]}")
    assignment["split"] = assignment["split"].astype("string")
    return assignment.reset_index(drop=True)


def fold_summary(fold_table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Per fold: the test contributors (named for a leave-one-out fold), rows per part, terms.

    Returns:
        ``fold``, ``kind``, ``held_out`` (the contributor, or ``N contributors``),
        ``train_rows``, ``validation_rows``, ``test_rows``, ``test_terms`` (terms of the
        test part, most rows first, with counts).
    """
    records = []
    for fold in fold_names(fold_table):
        assignment = fold_assignment(fold_table, rows, fold)
        parts = fold_table[fold_table["fold"] == fold]
        test = parts[parts["part"] == "test"]
        counts = assignment["split"].value_counts()
        terms = assignment.loc[assignment["split"] == "test", "term"].value_counts()
        records.append(
            {
                "fold": fold,
                "kind": str(parts["kind"].iloc[0]),
                "held_out": str(test["contributor_id"].iloc[0])
                if len(test) == 1
                else f"{len(test)} contributors",
                **{f"{part}_rows": int(counts.get(part, 0)) for part in PARTS},
                "test_terms": ", ".join(f"{term} {n}" for term, n in terms.items()),
            }
        )
    return pd.DataFrame(records)
