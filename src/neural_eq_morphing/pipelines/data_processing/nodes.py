"""Nodes of the ``data_processing`` pipeline: raw SAFE-DB bytes to normalised model inputs.

Every function here is pure: it takes data and parameters and returns data. Reading and
writing happen in the catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from neural_eq_morphing.datasets.safe_db_dataset import sha256_of
from neural_eq_morphing.eq.normalisers import build_normaliser, normaliser_from_dict
from neural_eq_morphing.eq.parameters import (
    LOWER_LIMITS,
    PARAMETER_NAMES,
    UPPER_LIMITS,
    out_of_range_mask,
)
from neural_eq_morphing.eq.safe_db import N_FIELDS, check_safe_db_shape, parse_safe_db
from neural_eq_morphing.errors import UserError

logger = logging.getLogger(__name__)

PARAMS = list(PARAMETER_NAMES)
SPLITS = ("train", "validation", "test")
_ID_COLUMNS = ["entry_id", "contributor_id", "term"]


class RejectedShareError(UserError, ValueError):
    """Too many rows of the raw file failed validation."""


class RawFileMismatchError(UserError, ValueError):
    """The raw file is not the published SAFE-DB file, and the user did not say it is theirs."""


def _how_it_differs(raw: bytes, published: Mapping[str, Any]) -> list[str]:
    """What sets a raw file apart from the published one: size, lines, a cut last line."""
    lines = [line for line in raw.split(b"\n") if line.strip(b"\r\t ")]
    notes = [f"{len(raw):,} bytes here, {int(published['size_bytes']):,} published"]
    if "n_lines" in published:
        notes.append(f"{len(lines):,} lines here, {int(published['n_lines']):,} published")
    if raw and not raw.endswith(b"\n") and lines:
        fields = len(lines[-1].decode("utf-8", errors="replace").split(","))
        notes.append(
            f"the file ends mid-line (its last line has {fields} of {N_FIELDS} fields): "
            "it looks truncated, e.g. by an interrupted copy"
        )
    return notes


def describe_raw_file(
    raw: bytes, published: Mapping[str, Any], raw_file: Mapping[str, Any]
) -> dict[str, Any]:
    """Check the raw file, record its checksum, and stop when it is not the published one.

    This runs before anything is written: a file that is empty or not SAFE-DB at all, or
    that differs from the published file (a truncated copy, say), stops the run here with
    a message that says how it differs and how to proceed. A user's own export is used
    when ``raw_file.own_data`` says so, with a warning.

    Args:
        raw: Bytes of the raw SAFE-DB file.
        published: ``url``, ``sha256``, ``size_bytes`` and ``n_lines`` of the published
            file.
        raw_file: ``own_data``: the file is the user's own data on purpose.

    Returns:
        Provenance: SHA-256, size, line count and whether the file is the published one.

    Raises:
        SafeDbFormatError: When the file is empty or has no 25-field line.
        RawFileMismatchError: When it is not the published file and ``own_data`` is off.
    """
    check_safe_db_shape(raw)
    digest = sha256_of(raw)
    matches = digest == str(published["sha256"]).lower()
    if not matches:
        differs = "; ".join(_how_it_differs(raw, published))
        if not bool(raw_file.get("own_data", False)):
            raise RawFileMismatchError(
                f"The raw SAFE-DB file is not the published one (SHA-256 {digest[:12]}…, "
                f"expected {str(published['sha256'])[:12]}…): {differs}. Replace it with the "
                f"published file ({published['url']}), or delete it and let the run fetch "
                "it; if it is your own export on purpose, run with "
                '--params "raw_file.own_data=true".'
            )
        logger.warning(
            "The raw SAFE-DB file is not the published one (%s). Using it as your own data "
            "(raw_file.own_data); results will not match the reference figures.",
            differs,
        )
    return {
        "sha256": digest,
        "size_bytes": len(raw),
        "n_lines": raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1),
        "matches_published": matches,
        "published_sha256": str(published["sha256"]).lower(),
        "source_url": str(published["url"]),
    }


def normalise_term(descriptor: str, merge: Mapping[str, str]) -> str:
    """Normalise a free-text descriptor: lower-case, strip, then apply the merge map."""
    term = descriptor.strip().lower()
    return merge.get(term, term)


def ingest_safe_db(raw: bytes, terms: Mapping[str, Any]) -> pd.DataFrame:
    """Parse the raw file into the named, typed table of docs/design.md section 3.

    The contributor IP address becomes ``contributor_id``; the free-text metadata is
    dropped; ``term`` is the normalised descriptor. Lines that fail to parse are kept
    with their ``parse_error`` for :func:`validate_settings` to quarantine.

    Args:
        raw: Bytes of the raw SAFE-DB file.
        terms: Term options; ``merge`` maps a normalised descriptor to another term.

    Returns:
        One row per non-blank line of the file.
    """
    frame = parse_safe_db(raw)
    if not isinstance(terms.get("merge") or {}, Mapping):
        raise ValueError(
            f"terms.merge must map a term to another, e.g. {{brighter: bright}}; "
            f"got {terms.get('merge')!r}"
        )
    merge = {
        normalise_term(source, {}): normalise_term(target, {})
        for source, target in (terms.get("merge") or {}).items()
    }
    frame.insert(
        frame.columns.get_loc("descriptor_raw") + 1,
        "term",
        frame["descriptor_raw"].map(
            lambda text: normalise_term(text, merge) if isinstance(text, str) else pd.NA
        ),
    )
    frame["term"] = frame["term"].astype("string")
    logger.info(
        "Ingested %d lines: %d parsed cleanly, %d with parse errors, %d contributors",
        len(frame),
        int((frame["parse_error"] == "").sum()),
        int((frame["parse_error"] != "").sum()),
        frame["contributor_id"].nunique(),
    )
    return frame


def _range_reasons(values: np.ndarray, mask: np.ndarray) -> list[str]:
    reasons = []
    for row, flags in zip(values, mask, strict=True):
        reasons.append(
            "; ".join(
                f"{PARAMS[i]}={row[i]:g} outside [{LOWER_LIMITS[i]:g}, {UPPER_LIMITS[i]:g}]"
                for i in np.flatnonzero(flags)
            )
        )
    return reasons


def validate_settings(
    ingested: pd.DataFrame, validation: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Split ingested rows into valid settings and a quarantine with a reason per row.

    A row is quarantined when it could not be parsed, when its ``entry_id`` repeats an
    earlier line's, or when a parameter lies outside the plug-in limits. Values within
    ``limit_rel_tol`` of a limit (float32 round-off in the file) are snapped onto it.

    It never fails on the rejected share: :func:`check_rejected_share` does, after the
    quarantine and the report are written, so that the rejected rows can be inspected.

    Args:
        ingested: Output of :func:`ingest_safe_db`.
        validation: ``max_rejected_fraction`` (recorded in the report) and
            ``limit_rel_tol``.

    Returns:
        The valid rows, the quarantined rows (with ``reason_kind`` and ``reason``), and a
        report of the counts.
    """
    frame = ingested.copy()
    kind = pd.Series("", index=frame.index, dtype="string")
    reason = frame["parse_error"].fillna("").astype("string")
    unparsed = reason != ""
    unreadable = reason.str.startswith("expected ") | reason.str.startswith("line ")
    kind[unparsed] = "unparseable value"
    kind[unreadable] = "unreadable line"

    duplicate = frame["entry_id"].notna() & frame["entry_id"].duplicated(keep="first") & ~unparsed
    kind[duplicate] = "duplicate entry_id"
    reason[duplicate] = (
        "entry_id "
        + frame.loc[duplicate, "entry_id"].astype("string")
        + (" repeats an earlier line")
    )

    values = frame[PARAMS].to_numpy(dtype=np.float64)
    tolerance = float(validation.get("limit_rel_tol", 0.0))
    invalid = out_of_range_mask(values, rel_tol=tolerance)
    outside = invalid.any(axis=1) & ~unparsed & ~duplicate
    mask = invalid[outside]
    kind[outside] = "out of range"
    reason[outside] = _range_reasons(values[outside], mask)

    rejected = kind != ""
    quarantine = frame.loc[rejected].drop(columns="parse_error")
    quarantine.insert(0, "reason", reason[rejected])
    quarantine.insert(0, "reason_kind", kind[rejected])
    quarantine = quarantine.reset_index(drop=True)

    valid = frame.loc[~rejected].drop(columns="parse_error").reset_index(drop=True)
    valid[PARAMS] = np.clip(valid[PARAMS].to_numpy(np.float64), LOWER_LIMITS, UPPER_LIMITS)
    valid["entry_id"] = valid["entry_id"].astype("int64")
    valid["channels"] = valid["channels"].astype("int64")

    share = float(rejected.mean()) if len(frame) else 0.0
    by_kind = {str(k): int(v) for k, v in kind[rejected].value_counts().sort_index().items()}
    report = {
        "n_rows": len(frame),
        "n_valid": len(valid),
        "n_rejected": int(rejected.sum()),
        "rejected_fraction": share,
        "rejected_by_kind": by_kind,
        "max_rejected_fraction": float(validation["max_rejected_fraction"]),
    }
    if report["n_rejected"]:
        logger.warning(
            "Quarantined %d of %d rows (%.2f%%): %s; first lines: %s",
            report["n_rejected"],
            report["n_rows"],
            100 * share,
            ", ".join(f"{n} {k}" for k, n in by_kind.items()),
            quarantine["line_number"].head(5).tolist(),
        )
    else:
        logger.info("All %d rows passed validation", report["n_rows"])
    return valid, quarantine, report


def check_rejected_share(
    valid: pd.DataFrame, quarantine: pd.DataFrame, report: Mapping[str, Any]
) -> pd.DataFrame:
    """Pass the valid rows on, unless too many rows were quarantined.

    Runs after :func:`validate_settings`' outputs are written, so that a failed run
    leaves the quarantine (``02_intermediate/settings_quarantine``) and the validation
    report to inspect.

    Raises:
        RejectedShareError: When the rejected share exceeds ``max_rejected_fraction``;
            the message gives the counts, the first reasons and where the quarantine is.
    """
    share, allowed = float(report["rejected_fraction"]), float(report["max_rejected_fraction"])
    if share <= allowed:
        return valid
    examples = "; ".join(
        f"line {line}: {text}"
        for line, text in zip(
            quarantine["line_number"].head(3), quarantine["reason"].head(3), strict=True
        )
    )
    raise RejectedShareError(
        f"{report['n_rejected']} of {report['n_rows']} rows ({100 * share:.1f}%) failed "
        f"validation, more than the allowed {100 * allowed:.1f}% "
        f"(validation.max_rejected_fraction). Expected the SAFE-DB equaliser file with "
        f"25 fields per line and parameters inside the plug-in limits. Examples: {examples}. "
        "Every rejected row and its reason is in data/02_intermediate/settings_quarantine."
    )


def filter_terms(
    valid: pd.DataFrame, terms: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the terms with at least ``min_examples`` rows, minus the excluded ones.

    Args:
        valid: Valid settings from :func:`validate_settings`.
        terms: ``min_examples`` and ``exclude`` (a list of normalised terms to drop).

    Returns:
        The filtered settings, and a summary of the kept terms (rows and contributors).
    """
    min_examples = int(terms["min_examples"])
    if min_examples < 1:
        raise ValueError(f"terms.min_examples must be at least 1, got {min_examples}")
    exclude = terms.get("exclude") or []
    if isinstance(exclude, str) or not isinstance(exclude, list | tuple):
        raise ValueError(f"terms.exclude must be a list of terms, e.g. [test]; got {exclude!r}")
    excluded = {str(term).strip().lower() for term in exclude}
    candidates = valid[~valid["term"].isin(excluded)]
    counts = candidates["term"].value_counts()
    kept = counts[counts >= min_examples].index
    filtered = candidates[candidates["term"].isin(kept)].reset_index(drop=True)
    if filtered.empty:
        raise ValueError(
            f"no term has at least {min_examples} valid rows (terms.min_examples); "
            f"the most frequent is {counts.index[0]!r} with {counts.iloc[0]} rows"
            if len(counts)
            else "no valid rows are left to filter"
        )
    summary = (
        filtered.groupby("term")
        .agg(rows=("entry_id", "size"), contributors=("contributor_id", "nunique"))
        .sort_values(["rows", "contributors"], ascending=False)
        .reset_index()
    )
    logger.info(
        "Kept %d terms with >= %d rows (%d rows); dropped %d rows of excluded or rare terms",
        len(summary),
        min_examples,
        len(filtered),
        len(valid) - len(filtered),
    )
    return filtered, summary


def _assign_contributors(
    counts: pd.DataFrame, fractions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Greedily assign each contributor (a row of ``counts``) to a split.

    Contributors are visited largest first (seeded random order among equal sizes). Each
    goes to the split whose share of the contributor's terms lags furthest behind that
    split's target fraction, weighted by the contributor's rows of each term. Ties go to
    the smaller splits first (test, then validation), so rare terms reach held-out data.
    """
    matrix = counts.to_numpy(dtype=np.float64)
    totals = matrix.sum(axis=0)
    sizes = matrix.sum(axis=1)
    order = np.lexsort((rng.permutation(len(sizes)), -sizes))
    assigned = np.zeros((len(fractions), matrix.shape[1]))
    # Smallest target first; among equal targets the later split (test before validation).
    preference = np.lexsort((-np.arange(len(fractions)), fractions))
    choice = np.empty(len(sizes), dtype=np.int64)
    for group in order:
        shares = assigned / totals
        score = ((fractions[:, None] - shares) * matrix[group]).sum(axis=1) / sizes[group]
        best = score.max()
        choice[group] = next(s for s in preference if score[s] >= best - 1e-12)
        assigned[choice[group]] += matrix[group]
    return choice


def split_by_contributor(
    filtered: pd.DataFrame, split: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Assign every filtered row to train, validation or test, grouped by contributor.

    No contributor appears in two splits; within that constraint the per-term shares
    follow the configured fractions as closely as the greedy assignment allows.

    Args:
        filtered: Output of :func:`filter_terms`.
        split: ``fractions`` (train / validation / test, summing to 1) and ``seed``.

    Returns:
        The split assignment (``entry_id``, ``contributor_id``, ``term``, ``split``) and a
        per-term summary of rows in each split.
    """
    fractions = {name: float(split["fractions"][name]) for name in SPLITS}
    if any(value <= 0 for value in fractions.values()) or not np.isclose(
        sum(fractions.values()), 1.0
    ):
        raise ValueError(
            f"split.fractions must be positive and sum to 1 for {list(SPLITS)}, got {fractions}"
        )
    counts = pd.crosstab(filtered["contributor_id"], filtered["term"])
    rng = np.random.default_rng(int(split["seed"]))
    choice = _assign_contributors(counts, np.array(list(fractions.values())), rng)
    by_contributor = dict(zip(counts.index, np.array(SPLITS)[choice], strict=True))

    assignment = filtered[_ID_COLUMNS].copy()
    assignment["split"] = assignment["contributor_id"].map(by_contributor).astype("string")
    summary = (
        pd.crosstab(assignment["term"], assignment["split"])
        .reindex(columns=list(SPLITS), fill_value=0)
        .assign(total=lambda table: table.sum(axis=1))
        .sort_values("total", ascending=False)
        .reset_index()
    )
    summary.columns.name = None
    sizes = assignment["split"].value_counts()
    logger.info(
        "Split %d rows from %d contributors: %s",
        len(assignment),
        len(counts),
        ", ".join(f"{name} {int(sizes.get(name, 0))}" for name in SPLITS),
    )
    return assignment, summary


def _training_values(filtered: pd.DataFrame, assignment: pd.DataFrame) -> np.ndarray:
    train_ids = assignment.loc[assignment["split"] == "train", "entry_id"]
    return filtered.loc[filtered["entry_id"].isin(train_ids), PARAMS].to_numpy(np.float64)


def fit_normaliser(
    filtered: pd.DataFrame, assignment: pd.DataFrame, normaliser: Mapping[str, Any]
) -> dict[str, Any]:
    """Build a normaliser from its configuration, fitting it on the training split only.

    Args:
        filtered: Filtered settings in plug-in units.
        assignment: Split assignment from :func:`split_by_contributor`.
        normaliser: ``{"kind": "minmax", "log_kinds": [...]}`` or ``{"kind": "zscore"}``.

    Returns:
        The normaliser as a JSON-able dict.
    """
    return build_normaliser(normaliser, _training_values(filtered, assignment)).to_dict()


def normalise_splits(
    filtered: pd.DataFrame, assignment: pd.DataFrame, normaliser: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Apply a normaliser and cut the table into the train, validation and test splits.

    Args:
        filtered: Filtered settings in plug-in units.
        assignment: Split assignment from :func:`split_by_contributor`.
        normaliser: JSON description from :func:`fit_normaliser`.

    Returns:
        Train, validation and test tables: ``entry_id``, ``contributor_id``, ``term`` and
        the 13 normalised features (same column names as the plug-in parameters).
    """
    transform = normaliser_from_dict(normaliser)
    split_of = assignment.set_index("entry_id")["split"]
    table = filtered[_ID_COLUMNS].copy()
    table[PARAMS] = transform.transform(filtered[PARAMS].to_numpy(np.float64))
    labels = table["entry_id"].map(split_of)
    if labels.isna().any():
        raise ValueError("the split assignment does not cover every filtered row")
    return tuple(table[labels == name].reset_index(drop=True) for name in SPLITS)
