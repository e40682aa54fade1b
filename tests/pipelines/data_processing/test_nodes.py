import hashlib
import logging

import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.eq.safe_db import SafeDbFormatError
from neural_eq_morphing.pipelines.data_processing.nodes import (
    RawFileMismatchError,
    RejectedShareError,
    check_rejected_share,
    describe_raw_file,
    filter_terms,
    fit_normaliser,
    ingest_safe_db,
    normalise_splits,
    normalise_term,
    split_by_contributor,
    validate_settings,
)
from tests.conftest import make_line

PARAMS = list(PARAMETER_NAMES)
VALIDATION = {"max_rejected_fraction": 0.7, "limit_rel_tol": 1e-6}
TERMS = {"min_examples": 5, "merge": {}, "exclude": []}
SPLIT = {"fractions": {"train": 0.7, "validation": 0.15, "test": 0.15}, "seed": 1}


def _file(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _with(column: str, value: object) -> list[object]:
    params = ["1", "100", "0", "500", "1", "0", "1000", "1", "0", "2000", "1", "0", "5000"]
    params[PARAMS.index(column)] = str(value)
    return params


@pytest.fixture
def published(small_safe_db):
    return {
        "url": "http://127.0.0.1/unused",
        "sha256": hashlib.sha256(small_safe_db).hexdigest(),
        "size_bytes": len(small_safe_db),
    }


def test_describe_raw_file_records_checksum_quietly_for_the_published_file(
    small_safe_db, published, caplog
):
    with caplog.at_level(logging.WARNING):
        provenance = describe_raw_file(small_safe_db, published, {"own_data": False})
    assert provenance["matches_published"] is True
    assert provenance["sha256"] == published["sha256"]
    assert provenance["size_bytes"] == len(small_safe_db)
    assert provenance["n_lines"] == 40
    assert caplog.records == []


def test_describe_raw_file_uses_declared_own_data_with_a_warning(small_safe_db, published, caplog):
    with caplog.at_level(logging.WARNING):
        provenance = describe_raw_file(small_safe_db + b"\n", published, {"own_data": True})
    assert provenance["matches_published"] is False
    assert "not the published" in caplog.text
    assert "raw_file.own_data" in caplog.text


def test_describe_raw_file_stops_on_a_truncated_copy_saying_how_it_differs(
    small_safe_db, published
):
    cut = small_safe_db[: len(small_safe_db) // 2]
    assert not cut.endswith(b"\n")
    with pytest.raises(RawFileMismatchError) as caught:
        describe_raw_file(cut, {**published, "n_lines": 40}, {"own_data": False})
    message = str(caught.value)
    assert f"{len(cut):,} bytes here, {len(small_safe_db):,} published" in message
    assert "lines here, 40 published" in message
    assert "looks truncated" in message
    assert "raw_file.own_data=true" in message


@pytest.mark.parametrize("raw", [b"", b"a,b,c\n1,2,3\n"])
def test_describe_raw_file_stops_on_a_file_that_is_not_safe_db(raw, published):
    with pytest.raises(SafeDbFormatError, match="SAFE-DB"):
        describe_raw_file(raw, published, {"own_data": True})


def test_normalise_term():
    assert normalise_term("  Warm ", {}) == "warm"
    assert normalise_term("Brighter", {"brighter": "bright"}) == "bright"


def test_ingest_drops_addresses_and_metadata_and_normalises_terms(caplog):
    line = make_line(1, " Brighter ", "203.0.113.5")
    metadata_line = line.replace(",,,,,,,", ",rock,guitar,UK,pro,30,English,")
    with caplog.at_level(logging.INFO):
        frame = ingest_safe_db(_file(metadata_line), {"merge": {"BRIGHTER": "Bright"}})
    assert frame["term"].tolist() == ["bright"]
    assert frame["descriptor_raw"].tolist() == [" Brighter "]
    assert frame["contributor_id"].tolist() == ["c0001"]
    text = frame.to_csv()
    for private in ("203.0.113.5", "rock", "guitar", "English"):
        assert private not in text
    assert "Ingested 1 lines" in caplog.text
    assert "203.0.113" not in caplog.text
    with pytest.raises(ValueError, match=r"terms\.merge must map a term to another"):
        ingest_safe_db(_file(line), {"merge": ["brighter", "bright"]})


def _ingested(*lines: str) -> pd.DataFrame:
    return ingest_safe_db(_file(*lines), TERMS)


def test_validate_quarantines_bad_rows_with_reasons(caplog):
    ingested = _ingested(
        make_line(1, params=_with("peak1_freq_hz", 500)),
        "2,warm,203.0.113.1,2,2,1,2,3",
        make_line(3, params=_with("peak1_gain_db", "loud")),
        make_line(4, params=_with("peak3_freq_hz", 50000)),
        make_line(5, params=_with("low_shelf_gain_db", float("nan"))),
        make_line(1),
        make_line(7, params=_with("peak1_q", 0.1 * (1 - 1e-8))),
        make_line(8),
    )
    with caplog.at_level(logging.WARNING):
        valid, quarantine, report = validate_settings(ingested, VALIDATION)
    assert valid["entry_id"].tolist() == [1, 7, 8]
    assert valid.loc[1, "peak1_q"] == 0.1  # snapped onto the limit
    reasons = dict(zip(quarantine["line_number"], quarantine["reason"], strict=True))
    kinds = dict(zip(quarantine["line_number"], quarantine["reason_kind"], strict=True))
    assert reasons[2] == "expected 25 fields, found 8"
    assert kinds[2] == "unreadable line"
    assert reasons[3] == "peak1_gain_db 'loud' is not a number"
    assert kinds[3] == "unparseable value"
    assert reasons[4] == "peak3_freq_hz=50000 outside [220, 10000]"
    assert kinds[4] == "out of range"
    assert reasons[5] == "low_shelf_gain_db 'nan' is not a finite number"
    assert reasons[6] == "entry_id 1 repeats an earlier line"
    assert report["n_rows"] == 8
    assert report["n_rejected"] == 5
    assert report["rejected_by_kind"] == {
        "duplicate entry_id": 1,
        "out of range": 1,
        "unparseable value": 2,
        "unreadable line": 1,
    }
    assert "Quarantined 5 of 8 rows" in caplog.text
    assert "203.0.113" not in caplog.text
    assert "203.0.113" not in quarantine.to_csv()


def test_the_check_fails_above_the_rejected_share_and_names_the_quarantine():
    ingested = _ingested(make_line(1), make_line(2, params=_with("peak1_gain_db", 40)))
    outputs = validate_settings(ingested, {**VALIDATION, "max_rejected_fraction": 0.1})
    with pytest.raises(
        RejectedShareError, match=r"1 of 2 rows \(50.0%\) failed validation"
    ) as caught:
        check_rejected_share(*outputs)
    assert "peak1_gain_db=40 outside [-12, 12]" in str(caught.value)
    assert "settings_quarantine" in str(caught.value)
    allowed = validate_settings(ingested, {**VALIDATION, "max_rejected_fraction": 0.5})
    assert check_rejected_share(*allowed) is allowed[0]


def test_validate_passes_clean_data_untouched(small_safe_db):
    ingested = ingest_safe_db(small_safe_db, TERMS)
    valid, quarantine, report = validate_settings(ingested, VALIDATION)
    assert len(valid) == 40
    assert quarantine.empty
    assert report["rejected_fraction"] == 0.0
    np.testing.assert_array_equal(valid[PARAMS].to_numpy(), ingested[PARAMS].to_numpy())


def test_filter_terms_keeps_frequent_terms_and_applies_exclusions(small_safe_db):
    valid, _, _ = validate_settings(ingest_safe_db(small_safe_db, TERMS), VALIDATION)
    filtered, summary = filter_terms(valid, TERMS)
    assert sorted(filtered["term"].unique()) == ["airy", "bright", "warm"]
    assert summary.set_index("term")["rows"].to_dict() == {"warm": 16, "bright": 16, "airy": 6}
    filtered, summary = filter_terms(valid, {**TERMS, "exclude": ["Airy"], "min_examples": 2})
    assert sorted(filtered["term"].unique()) == ["bright", "rare", "warm"]
    with pytest.raises(ValueError, match="no term has at least 100 valid rows"):
        filter_terms(valid, {**TERMS, "min_examples": 100})
    with pytest.raises(ValueError, match=r"terms.exclude must be a list of terms, e.g. \[test\]"):
        filter_terms(valid, {**TERMS, "exclude": "airy"})


def _filtered(small_safe_db) -> pd.DataFrame:
    valid, _, _ = validate_settings(ingest_safe_db(small_safe_db, TERMS), VALIDATION)
    return filter_terms(valid, TERMS)[0]


def test_split_groups_contributors_and_is_seeded(small_safe_db):
    filtered = _filtered(small_safe_db)
    assignment, summary = split_by_contributor(filtered, SPLIT)
    assert assignment.groupby("contributor_id")["split"].nunique().max() == 1
    assert set(assignment["split"]) == {"train", "validation", "test"}
    assert assignment["entry_id"].tolist() == filtered["entry_id"].tolist()
    assert summary[["train", "validation", "test"]].sum().sum() == len(filtered)
    again, _ = split_by_contributor(filtered, SPLIT)
    pd.testing.assert_frame_equal(assignment, again)


def test_split_reaches_rare_term_in_test_when_grouping_allows():
    # "rare" comes from one big contributor and one small one: the small one goes to test.
    lines = [make_line(i, "rare", "198.51.100.1") for i in range(1, 21)]
    lines += [make_line(21, "rare", "198.51.100.2")]
    lines += [make_line(100 + i, "warm", f"198.51.100.{10 + i}") for i in range(20)]
    valid, _, _ = validate_settings(_ingested(*lines), VALIDATION)
    _, summary = split_by_contributor(filter_terms(valid, TERMS)[0], SPLIT)
    counts = summary.set_index("term")
    assert counts.loc["rare", "train"] == 20
    assert counts.loc["rare", "test"] == 1


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.8, "validation": 0.15, "test": 0.15},
        {"train": 1.0, "validation": 0.0, "test": 0},
    ],
)
def test_split_rejects_bad_fractions(small_safe_db, fractions):
    with pytest.raises(ValueError, match="must be positive and sum to 1"):
        split_by_contributor(_filtered(small_safe_db), {**SPLIT, "fractions": fractions})


def test_log2_normalisation_is_in_unit_range_and_keeps_split_rows(small_safe_db):
    filtered = _filtered(small_safe_db)
    assignment, _ = split_by_contributor(filtered, SPLIT)
    config = {"kind": "minmax", "log_kinds": ["freq", "q"]}
    normaliser = fit_normaliser(filtered, assignment, config)
    train, validation, test = normalise_splits(filtered, assignment, normaliser)
    assert len(train) + len(validation) + len(test) == len(filtered)
    for table, name in ((train, "train"), (validation, "validation"), (test, "test")):
        ids = set(assignment.loc[assignment["split"] == name, "entry_id"])
        assert set(table["entry_id"]) == ids
        assert table[PARAMS].to_numpy().min() >= 0.0
        assert table[PARAMS].to_numpy().max() <= 1.0


def test_zscore_is_fitted_on_the_training_split_only(small_safe_db):
    filtered = _filtered(small_safe_db)
    assignment, _ = split_by_contributor(filtered, SPLIT)
    normaliser = fit_normaliser(filtered, assignment, {"kind": "zscore"})
    train, validation, _ = normalise_splits(filtered, assignment, normaliser)
    np.testing.assert_allclose(train[PARAMS].mean(), 0.0, atol=1e-9)
    np.testing.assert_allclose(train[PARAMS].std(ddof=0), 1.0, atol=1e-9)
    assert not np.allclose(validation[PARAMS].mean(), 0.0, atol=1e-3)
