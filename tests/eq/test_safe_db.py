import gzip

import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.eq.safe_db import (
    PARSED_COLUMNS,
    SafeDbFormatError,
    parse_safe_db,
    redact_ip_addresses,
)
from tests.conftest import make_line


def _file(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_parses_typed_columns_and_pseudonymises_contributors():
    raw = _file(
        make_line(1, "Warm", "203.0.113.7"),
        make_line(2, '"bass, boost"', "203.0.113.8", channels=(1, 1)),
        make_line(3, "Bright", "203.0.113.7"),
    )
    frame = parse_safe_db(raw)
    assert list(frame.columns) == list(PARSED_COLUMNS)
    assert frame["entry_id"].tolist() == [1, 2, 3]
    assert frame["descriptor_raw"].tolist() == ["Warm", "bass, boost", "Bright"]
    assert frame["contributor_id"].tolist() == ["c0001", "c0002", "c0001"]
    assert frame["channels"].tolist() == [2, 1, 2]
    assert (frame["parse_error"] == "").all()
    assert frame[list(PARAMETER_NAMES)].dtypes.unique().tolist() == [np.dtype("float64")]
    assert "203.0.113" not in frame.to_csv()


def test_malformed_rows_are_kept_with_a_reason():
    params = ["1"] * 13
    text_gain = ["loud", *params[1:]]
    missing = [*params[:4], "", *params[5:]]
    nan_value = [*params[:2], "nan", *params[3:]]
    raw = _file(
        make_line(1),
        "2,Warm,203.0.113.9,2,2,1,2",  # truncated
        make_line(3, params=text_gain),
        make_line(4, params=missing),
        make_line(5, params=nan_value),
        make_line("x"),
        make_line(7, channels=(1, 2)),
    )
    frame = parse_safe_db(raw).set_index("line_number")
    errors = frame["parse_error"]
    assert errors[1] == ""
    assert errors[2] == "expected 25 fields, found 7"
    assert frame.loc[2, "entry_id"] == 2
    assert pd.isna(frame.loc[2, "contributor_id"])
    assert errors[3] == "low_shelf_gain_db 'loud' is not a number"
    assert errors[4] == "peak1_q is missing"
    assert errors[5] == "peak1_gain_db 'nan' is not a finite number"
    assert errors[6] == "entry_id 'x' is not an integer"
    assert errors[7] == "input channels (1) differ from output (2)"


def test_non_utf8_line_is_reported_not_fatal():
    raw = _file(make_line(1)) + b"2,W\xe4rm,203.0.113.1" + b",1" * 22 + b"\n" + _file(make_line(3))
    frame = parse_safe_db(raw)
    assert frame["parse_error"].tolist()[0] == ""
    assert frame["parse_error"].tolist()[1].startswith("line is not valid UTF-8 (byte 0xe4")
    assert frame["parse_error"].tolist()[2] == ""
    assert frame["line_number"].tolist() == [1, 2, 3]


def test_windows_line_endings_and_blank_lines_are_accepted():
    raw = (make_line(1) + "\r\n\r\n" + make_line(2) + "\r\n").encode()
    frame = parse_safe_db(raw)
    assert frame["entry_id"].tolist() == [1, 2]
    assert (frame["parse_error"] == "").all()


@pytest.mark.parametrize("raw", [b"", b"\n\n", b"  \r\n"])
def test_empty_file_is_rejected(raw):
    with pytest.raises(SafeDbFormatError, match="empty; expected a SAFE-DB equaliser file"):
        parse_safe_db(raw)


def test_file_of_another_shape_is_rejected():
    raw = b"name,age\nalice,3\nbob,4\n"
    expected = r"no line has 25 fields \(field counts seen: \[2\]"
    with pytest.raises(SafeDbFormatError, match=expected):
        parse_safe_db(raw)


def test_a_malformed_checksum_is_rejected_without_quoting_it():
    frame = parse_safe_db(_file(make_line(1, checksum="203.0.113.9"), make_line(2)))
    assert frame["parse_error"][0] == "feature_checksum is not 32 hexadecimal digits"
    assert pd.isna(frame["feature_checksum"][0])
    assert frame["parse_error"][1] == ""
    assert "203.0.113.9" not in frame.to_csv()


def test_ip_like_text_is_redacted_in_descriptors_and_reasons():
    raw = _file(make_line(1, "warm 10.1.2.3"), make_line(2, params=["10.1.2.3"] * 13))
    frame = parse_safe_db(raw)
    assert "10.1.2.3" not in frame.to_csv()
    assert frame["descriptor_raw"][0] == "warm <redacted>"
    assert "'<redacted>' is not a number" in frame["parse_error"][1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from 192.168.0.1 today", "from <redacted> today"),
        ("ip 10.1.2.3.", "ip <redacted>."),
        ("10.1.2.3.4", "<redacted>"),
        ("at 10.0.0.1, then", "at <redacted>, then"),
        ("fe80::1ff:fe23:4567:890a", "<redacted>"),
        ("warm", "warm"),
        ("3.5 dB", "3.5 dB"),
        ("1.2.3", "1.2.3"),
    ],
)
def test_redact_ip_addresses(text, expected):
    assert redact_ip_addresses(text) == expected


def test_a_byte_order_mark_is_ignored(line_factory):
    raw = (line_factory(1) + "\n" + line_factory(2, address="192.0.2.9") + "\n").encode()
    plain, marked = parse_safe_db(raw), parse_safe_db(b"\xef\xbb\xbf" + raw)
    pd.testing.assert_frame_equal(plain, marked)
    assert (marked["parse_error"] == "").all()


def test_a_header_row_is_skipped_and_takes_no_pseudonym(line_factory):
    header = ",".join(["id", "descriptor", "ip"] + [f"field{i}" for i in range(22)])
    raw = (header + "\n" + line_factory(1) + "\n").encode()
    parsed = parse_safe_db(raw)
    assert parsed["line_number"].tolist() == [2]
    assert parsed["contributor_id"].tolist() == ["c0001"]
    assert parsed["parse_error"].tolist() == [""]


def test_a_stray_carriage_return_quarantines_only_its_line(line_factory):
    bad = line_factory(2)
    raw = (line_factory(1) + "\n" + bad[:15] + "\r" + bad[15:] + "\n").encode()
    parsed = parse_safe_db(raw).set_index("line_number")
    assert parsed.loc[1, "parse_error"] == ""
    assert parsed.loc[2, "parse_error"] == "line holds a stray carriage return (\\r) inside a field"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (gzip.compress(b"1,warm\n"), "is a gzip archive"),
        (bytes(range(256)) * 40, "no line has 25 fields"),
    ],
)
def test_compressed_or_binary_input_gets_the_projects_own_error(raw, message):
    with pytest.raises(SafeDbFormatError, match=message):
        parse_safe_db(raw)
