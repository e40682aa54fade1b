"""Parsing of the raw SAFE-DB equaliser file (docs/design.md section 3), without Kedro.

The raw file is headerless CSV with 25 fields per line. :func:`parse_safe_db` turns its
bytes into one typed row per line. A line that cannot be parsed is *not* dropped: it keeps
its line number and a ``parse_error`` that says what was wrong, so that validation can put
it in quarantine. Contributor IP addresses (field 2) are replaced by a pseudonym here and
never leave this function; the free-text metadata (fields 18-23) is dropped.
"""

from __future__ import annotations

import csv
import logging
import math
import re

import numpy as np
import pandas as pd

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.errors import UserError

logger = logging.getLogger(__name__)

N_FIELDS = 25
#: The UTF-8 byte order mark some editors put at the start of a CSV file.
UTF8_BOM = b"\xef\xbb\xbf"
#: How compressed files start (gzip, zip, bzip2, xz), by name.
_COMPRESSED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz"}
_PARAM_FIELDS = slice(5, 18)
_IP_FIELD = 2
_CHECKSUM_FIELD = 24
_VALID_CHANNELS = (1, 2)

# Four or more dot-separated groups of 1-3 digits (over-redacting is the safe side).
_IPV4 = re.compile(r"(?<!\d)\d{1,3}(?:\.\d{1,3}){3,}(?!\d)")
_CHECKSUM = re.compile(r"[0-9a-fA-F]{32}")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
REDACTED = "<redacted>"

#: Columns of the parsed table, in order.
PARSED_COLUMNS: tuple[str, ...] = (
    "line_number",
    "entry_id",
    "descriptor_raw",
    "contributor_id",
    "channels",
    *PARAMETER_NAMES,
    "feature_checksum",
    "parse_error",
)


class SafeDbFormatError(UserError, ValueError):
    """The input is not a SAFE-DB equaliser file at all (empty, or of another shape)."""


def redact_ip_addresses(text: str) -> str:
    """Replace anything that looks like an IPv4 or IPv6 address with ``<redacted>``."""
    return _IPV6.sub(REDACTED, _IPV4.sub(REDACTED, text))


def _quote(value: str, limit: int = 40) -> str:
    value = redact_ip_addresses(value)
    return repr(value if len(value) <= limit else value[:limit] + "…")


def _parse_number(value: str, column: str) -> tuple[float, str | None]:
    text = value.strip()
    if not text:
        return math.nan, f"{column} is missing"
    try:
        number = float(text)
    except ValueError:
        return math.nan, f"{column} {_quote(text)} is not a number"
    if not math.isfinite(number):
        return math.nan, f"{column} {_quote(text)} is not a finite number"
    return number, None


def _parse_int(value: str, column: str) -> tuple[int | None, str | None]:
    text = value.strip()
    try:
        return int(text), None
    except ValueError:
        return None, f"{column} {_quote(text)} is not an integer"


def _split_lines(raw: bytes) -> list[tuple[int, bytes]]:
    lines = raw.removeprefix(UTF8_BOM).split(b"\n")
    return [
        (number, line.rstrip(b"\r"))
        for number, line in enumerate(lines, start=1)
        if line.strip(b"\r\t ")
    ]


def _parse_fields(fields: list[str], pseudonyms: dict[str, str]) -> dict[str, object]:
    errors: list[str] = []
    entry_id, error = _parse_int(fields[0], "entry_id")
    errors += [error] if error else []

    address = fields[_IP_FIELD].strip()
    contributor = pseudonyms.setdefault(address, f"c{len(pseudonyms) + 1:04d}")

    channels_in, error_in = _parse_int(fields[3], "input channels")
    channels_out, error_out = _parse_int(fields[4], "output channels")
    errors += [e for e in (error_in, error_out) if e]
    if not (error_in or error_out):
        if channels_in != channels_out:
            errors.append(f"input channels ({channels_in}) differ from output ({channels_out})")
        elif channels_in not in _VALID_CHANNELS:
            errors.append(f"channels {channels_in} is not 1 or 2")

    checksum = fields[_CHECKSUM_FIELD].strip()
    if not _CHECKSUM.fullmatch(checksum):
        # Not quoted: in a shifted row this field could hold anything, an address included.
        errors.append("feature_checksum is not 32 hexadecimal digits")
        checksum = None
    row: dict[str, object] = {
        "entry_id": entry_id,
        "descriptor_raw": redact_ip_addresses(fields[1]),
        "contributor_id": contributor,
        "channels": channels_in,
        "feature_checksum": checksum,
    }
    for column, value in zip(PARAMETER_NAMES, fields[_PARAM_FIELDS], strict=True):
        row[column], error = _parse_number(value, column)
        errors += [error] if error else []
    row["parse_error"] = "; ".join(errors)
    return row


def _empty_row(error: str) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(PARSED_COLUMNS)
    row.update(dict.fromkeys(PARAMETER_NAMES, math.nan))
    row["parse_error"] = error
    return row


def _fields(text: str) -> list[str] | None:
    """The CSV fields of one line, or ``None`` when the csv module cannot read it.

    That is a stray carriage return or a NUL byte inside a field.
    """
    try:
        return next(csv.reader([text]), [])
    except csv.Error:
        return None


def _unreadable(text: str) -> str:
    if "\r" in text:
        return "line holds a stray carriage return (\\r) inside a field"
    if "\x00" in text:
        return "line holds a NUL byte: binary data, not text"
    return "line is not readable as CSV"


def is_header(fields: list[str]) -> bool:
    """Whether a line of 25 fields is a header row: none of its 13 parameters is a number."""
    return len(fields) == N_FIELDS and all(
        _parse_number(value, "")[1] is not None for value in fields[_PARAM_FIELDS]
    )


def check_safe_db_shape(raw: bytes) -> None:
    """Check that ``raw`` looks like a SAFE-DB equaliser file at all.

    Single bad lines are for validation to quarantine; this only rejects a file that is
    empty, compressed, or has no line with the 25 SAFE-DB fields.

    Raises:
        SafeDbFormatError: With a message that says what was expected.
    """
    expected = (
        f"a SAFE-DB equaliser file: headerless CSV, {N_FIELDS} comma-separated fields per line"
    )
    for magic, kind in _COMPRESSED.items():
        if raw.startswith(magic):
            raise SafeDbFormatError(
                f"the raw file is a {kind} archive, not {expected}; decompress it and put "
                "SAFEEqualiserUserData.csv itself in its place"
            )
    lines = _split_lines(raw)
    if not lines:
        raise SafeDbFormatError(f"the raw file is empty; expected {expected}")
    counts = set()
    for _, line in lines:
        fields = _fields(line.decode("utf-8", errors="replace"))
        if fields is not None and len(fields) == N_FIELDS:
            return
        counts.add(len(fields) if fields is not None else "unreadable")
    raise SafeDbFormatError(
        f"this is not {expected}: no line has {N_FIELDS} fields (field counts seen: "
        f"{sorted(counts, key=str)[:10]}). Check that the file is SAFEEqualiserUserData.csv "
        "from the SAFE project."
    )


def parse_safe_db(raw: bytes) -> pd.DataFrame:
    """Parse the bytes of a SAFE-DB equaliser file into a typed table, one row per line.

    Args:
        raw: The file's bytes.

    Returns:
        A table with the columns of :data:`PARSED_COLUMNS`. ``parse_error`` is empty for
        a line that parsed cleanly and says what was wrong otherwise. ``contributor_id``
        is ``"c0001"``, ``"c0002"``, … by first appearance of the contributor's address.
        A UTF-8 byte order mark is ignored; a first line whose 13 parameters are all
        non-numeric is a header row, skipped (and logged), so that it neither becomes a
        quarantined row nor takes a pseudonym.

    Raises:
        SafeDbFormatError: When the file is empty, compressed, or no line has the 25
            SAFE-DB fields.
    """
    check_safe_db_shape(raw)
    lines = _split_lines(raw)
    pseudonyms: dict[str, str] = {}
    rows: list[dict[str, object]] = []
    for position, (number, line) in enumerate(lines):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            row = _empty_row(
                f"line is not valid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start})"
            )
        else:
            fields = _fields(text)
            if fields is None:
                row = _empty_row(_unreadable(text))
            elif position == 0 and is_header(fields):
                logger.warning("Line %d is a header row, not a setting: skipped", number)
                continue
            elif len(fields) == N_FIELDS:
                row = _parse_fields(fields, pseudonyms)
            else:
                row = _empty_row(f"expected {N_FIELDS} fields, found {len(fields)}")
                entry_id, _ = _parse_int(fields[0], "entry_id") if fields else (None, None)
                row["entry_id"] = entry_id
        row["line_number"] = number
        rows.append(row)

    frame = pd.DataFrame(rows, columns=list(PARSED_COLUMNS))
    frame["line_number"] = frame["line_number"].astype("int64")
    frame["entry_id"] = frame["entry_id"].astype("Int64")
    frame["channels"] = frame["channels"].astype("Int64")
    frame[list(PARAMETER_NAMES)] = frame[list(PARAMETER_NAMES)].astype(np.float64)
    for column in ("descriptor_raw", "contributor_id", "feature_checksum", "parse_error"):
        frame[column] = frame[column].astype("string")
    return frame
