"""``data_processing`` end to end through Kedro, on the real SAFE-DB file."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.framework.session import KedroSession

from neural_eq_morphing.eq.normalisers import normaliser_from_dict
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from tests.conftest import DESIGNS, SAFE_DB_NAME, SAFE_DB_SHA256, project_parameters

pytestmark = pytest.mark.integration

PARAMS = list(PARAMETER_NAMES)
#: Runtime parameters declaring the raw file the user's own data.
OWN_DATA = {"raw_file": {"own_data": True}}
SPLITS = ("train", "validation", "test")
IPV4 = re.compile(rb"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")


def run_data_processing(project: Path, params: dict | None = None):
    """Run ``data_processing`` in a fresh session; return the context to load outputs."""
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=["data_processing"])
        return session.load_context()


def files_under_data(project: Path, *, ledger: bool = False) -> list[Path]:
    """The files a run left under ``data/`` (the raw file aside; the run ledger if asked).

    Hidden files (the ledger's lock) are left out.
    """
    return sorted(
        path
        for path in (project / "data").rglob("*")
        if path.is_file()
        and not path.name.startswith(".")
        and "01_raw" not in path.parts
        and (ledger or "run_ledger" not in path.parts)
    )


@pytest.fixture
def real_project(kedro_project: Path, real_safe_db: Path) -> Path:
    shutil.copy(real_safe_db, kedro_project / "data" / "01_raw" / SAFE_DB_NAME)
    return kedro_project


def test_real_file_end_to_end(real_project: Path, caplog, capfd):
    caplog.set_level("INFO")
    context = run_data_processing(real_project)
    catalog = context.catalog

    provenance = catalog.load("raw_data_provenance")
    assert provenance["sha256"] == SAFE_DB_SHA256
    assert provenance["matches_published"] is True
    assert provenance["n_lines"] == 1700

    report = catalog.load("validation_report")
    assert (report["n_rows"], report["n_valid"], report["n_rejected"]) == (1700, 1700, 0)
    assert catalog.load("settings_quarantine").empty

    filtered = catalog.load("settings_filtered")
    terms = catalog.load("term_summary")
    # descriptors only: test, re27 and vocals are excluded by default
    assert len(terms) == 11
    assert len(filtered) == 1089
    assert not set(filtered["term"]) & {"test", "re27", "vocals"}
    assert filtered["contributor_id"].nunique() > 10

    assignment = catalog.load("split_assignment")
    assert assignment.groupby("contributor_id")["split"].nunique().max() == 1
    test_terms = assignment.loc[assignment["split"] == "test", "term"].value_counts()
    for term in ("warm", "bright"):
        assert test_terms.get(term, 0) > 0, f"no {term!r} rows in the test split"

    designs = project_parameters("designs")["designs"]
    for design in DESIGNS:
        normaliser = normaliser_from_dict(catalog.load(f"{design}.feature_normaliser"))
        tables = [catalog.load(f"{design}.model_input_{s}") for s in SPLITS]
        assert sum(len(t) for t in tables) == 1089
        merged = pd.concat(tables).set_index("entry_id").loc[filtered["entry_id"]]
        restored = normaliser.inverse_transform(merged[PARAMS].to_numpy())
        np.testing.assert_allclose(restored, filtered[PARAMS].to_numpy(), rtol=1e-4, atol=1e-9)
        if designs[design]["feature_normaliser"]["kind"] == "minmax":
            assert merged[PARAMS].to_numpy().min() >= 0.0
            assert merged[PARAMS].to_numpy().max() <= 1.0

    # Every step left its parquet / JSON output, and none of them holds an address.
    # The run ledger records one finished run, naming what it wrote (checked for addresses
    # below with the rest).
    files = files_under_data(real_project, ledger=True)
    ledger = [path for path in files if "run_ledger" in path.parts]
    written = [path for path in files if path not in ledger]
    assert [path.suffix for path in ledger] == [".done"]
    assert "settings_validated" in json.loads(ledger[0].read_text())["outputs"]
    suffixes = {path.suffix for path in written}
    assert suffixes == {".parquet", ".json"}
    # 5 intermediate, 4 primary, and per design a feature normaliser and 3 model inputs
    assert len(written) == 5 + 4 + 4 * len(DESIGNS)
    raw_addresses = set(IPV4.findall((real_project / "data/01_raw" / SAFE_DB_NAME).read_bytes()))
    assert len(raw_addresses) > 100
    for path in files:
        content = path.read_bytes()
        if path.suffix == ".parquet":
            table = pd.read_parquet(path)
            content += table.astype(str).to_csv().encode()
        assert not raw_addresses & set(IPV4.findall(content)), f"address found in {path}"
    console = capfd.readouterr()
    logged = (caplog.text + console.out + console.err).encode()
    assert "Kept 11 terms" in caplog.text
    assert not raw_addresses & set(IPV4.findall(logged))


def _corrupt(raw: bytes) -> bytes:
    lines = raw.decode().splitlines()
    fields = lines[9].split(",")
    lines[9] = ",".join(fields[:8])  # line 10: truncated row
    fields = lines[19].split(",")
    fields[7] = "loud"  # line 20: text in peak1_gain_db
    lines[19] = ",".join(fields)
    fields = lines[29].split(",")
    fields[17] = "50000"  # line 30: high shelf at 50 kHz
    lines[29] = ",".join(fields)
    return ("\n".join(lines) + "\n").encode()


def test_corrupted_copy_runs_with_bad_rows_in_quarantine(kedro_project, real_safe_db, caplog):
    caplog.set_level("INFO")
    raw = _corrupt(real_safe_db.read_bytes())
    (kedro_project / "data" / "01_raw" / SAFE_DB_NAME).write_bytes(raw)
    catalog = run_data_processing(kedro_project, OWN_DATA).catalog

    quarantine = catalog.load("settings_quarantine").set_index("line_number")
    assert sorted(quarantine.index) == [10, 20, 30]
    assert quarantine.loc[10, "reason"] == "expected 25 fields, found 8"
    assert quarantine.loc[20, "reason"] == "peak1_gain_db 'loud' is not a number"
    assert quarantine.loc[30, "reason"] == "high_shelf_freq_hz=50000 outside [580, 20000]"
    assert catalog.load("validation_report")["n_rejected"] == 3
    assert catalog.load("raw_data_provenance")["matches_published"] is False
    assert "Quarantined 3 of 1700 rows" in caplog.text
    assert "not the published" in caplog.text


def test_a_truncated_copy_stops_before_writing_and_says_so(kedro_project, real_safe_db):
    (kedro_project / "data" / "01_raw" / SAFE_DB_NAME).write_bytes(
        real_safe_db.read_bytes()[:200_000]
    )
    with pytest.raises(Exception, match="looks truncated") as caught:
        run_data_processing(kedro_project)
    assert "200,000 bytes here, 479,130 published" in str(caught.value)
    assert "lines here, 1,700 published" in str(caught.value)
    assert files_under_data(kedro_project) == []
    # The run ledger records the failure: nothing of this run is ever read as the newest.
    assert [p.suffix for p in files_under_data(kedro_project, ledger=True)] == [".failed"]


def test_own_data_with_a_bom_a_header_and_a_stray_carriage_return(kedro_project, real_safe_db):
    lines = real_safe_db.read_bytes().split(b"\n")
    lines[4] = lines[4][:20] + b"\r" + lines[4][20:]  # line 5: a stray \r inside a field
    header = b",".join([b"id", b"descriptor", b"ip", *(b"f%d" % i for i in range(22))])
    raw = b"\xef\xbb\xbf" + header + b"\n" + b"\n".join(lines)
    (kedro_project / "data" / "01_raw" / SAFE_DB_NAME).write_bytes(raw)
    catalog = run_data_processing(kedro_project, OWN_DATA).catalog
    quarantine = catalog.load("settings_quarantine")
    # line numbers count the header; only the line with the stray \r is quarantined
    assert quarantine[["line_number", "reason_kind", "reason"]].to_numpy().tolist() == [
        [6, "unreadable line", "line holds a stray carriage return (\\r) inside a field"]
    ]
    ingested = catalog.load("settings_ingested")
    assert len(ingested) == 1700
    # the header took no pseudonym: the first setting's contributor is still c0001
    assert ingested["contributor_id"].iloc[0] == "c0001"


def test_too_many_rejected_rows_stop_the_run_after_the_quarantine_is_written(
    kedro_project, real_safe_db
):
    lines = real_safe_db.read_bytes().split(b"\n")
    for number in range(0, 200, 2):  # 100 rows of 1,700 (5.9%) cut short
        lines[number] = b",".join(lines[number].split(b",")[:8])
    (kedro_project / "data" / "01_raw" / SAFE_DB_NAME).write_bytes(b"\n".join(lines))
    with pytest.raises(Exception, match=r"100 of 1700 rows \(5.9%\) failed validation"):
        run_data_processing(kedro_project, OWN_DATA)
    written = {path.parts[-3] for path in files_under_data(kedro_project)}
    assert {"settings_quarantine.parquet", "validation_report.json"} <= written
    assert "settings_validated.parquet" not in written
    (quarantine,) = (kedro_project / "data" / "02_intermediate").glob(
        "settings_quarantine.parquet/*/settings_quarantine.parquet"
    )
    assert len(pd.read_parquet(quarantine)) == 100


def test_file_that_is_not_safe_db_stops_before_writing(kedro_project):
    (kedro_project / "data" / "01_raw" / SAFE_DB_NAME).write_text("id,name\n1,warm\n")
    with pytest.raises(Exception, match="no line has 25 fields") as caught:
        run_data_processing(kedro_project)
    assert "SAFEEqualiserUserData.csv" in str(caught.value)
    assert files_under_data(kedro_project) == []


@pytest.fixture
def bad_mirror(real_safe_db: Path) -> Iterator[str]:
    """A local server whose copy of the file has one byte changed."""
    body = bytearray(real_safe_db.read_bytes())
    body[100] ^= 1

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(bytes(body))

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{SAFE_DB_NAME}"
    httpd.shutdown()
    httpd.server_close()


def test_download_with_wrong_checksum_stops_and_writes_nothing(kedro_project, bad_mirror):
    (kedro_project / "conf" / "local" / "globals.yml").write_text(
        f"safe_db:\n  url: {bad_mirror}\n  sha256: {SAFE_DB_SHA256}\n  size_bytes: 479130\n"
    )
    with pytest.raises(Exception, match="SHA-256 is") as caught:
        run_data_processing(kedro_project)
    assert "Nothing was written" in str(caught.value)
    assert list((kedro_project / "data" / "01_raw").iterdir()) == []
    assert files_under_data(kedro_project) == []
