"""The raw dataset's download path, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kedro.io.core import DatasetError

from neural_eq_morphing.datasets.safe_db_dataset import SafeDbRawDataset
from neural_eq_morphing.runs import try_lock

BODY = b"1,warm,x,2,2" + b",0" * 20 + b"\n"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/good":
            self._send(200, BODY)
        elif self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY) * 10))
            self.end_headers()
            self.wfile.write(BODY[:20])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/slow":  # sends more than one read's worth, then stalls
            self.send_response(200)
            self.send_header("Content-Length", str(1_000_000))
            self.end_headers()
            self.wfile.write(b"1" * 200_000)
            self.wfile.flush()
            time.sleep(30)
        elif self.path == "/error":
            self._send(500, b"internal error")
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _dataset(path: Path, url: str, sha256: str | None = None, size: int | None = None):
    return SafeDbRawDataset(
        filepath=str(path),
        url=url,
        sha256=sha256 or hashlib.sha256(BODY).hexdigest(),
        size_bytes=len(BODY) if size is None else size,
        timeout=5,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_download_of_good_file_is_verified_and_saved(tmp_path, server):
    target = tmp_path / "raw" / "SAFE.csv"
    dataset = _dataset(target, f"{server}/good")
    assert not dataset.exists()
    assert dataset.load() == BODY
    assert target.read_bytes() == BODY
    assert sorted(p.name for p in target.parent.iterdir()) == ["SAFE.csv"]


@pytest.mark.parametrize(
    ("path", "sha256", "size", "message"),
    [
        ("/good", "0" * 64, None, "SHA-256 is .* expected 0000"),
        ("/good", None, 10, f"downloaded {len(BODY)} bytes, expected 10"),
        ("/truncated", None, None, "cut short after 20 bytes"),
        ("/error", None, None, "HTTP 500"),
    ],
)
def test_failed_download_leaves_nothing_behind(tmp_path, server, path, sha256, size, message):
    target = tmp_path / "raw" / "SAFE.csv"
    dataset = _dataset(target, f"{server}{path}", sha256=sha256, size=size)
    with pytest.raises(DatasetError, match=message) as caught:
        dataset.load()
    assert "Nothing was written" in str(caught.value)
    assert f"to '{target}'" in str(caught.value)
    assert list(target.parent.iterdir()) == []


def test_offline_error_says_where_to_put_the_file(tmp_path):
    target = tmp_path / "SAFE.csv"
    dataset = _dataset(target, f"http://127.0.0.1:{_closed_port()}/SAFE.csv")
    with pytest.raises(DatasetError, match="could not be reached") as caught:
        dataset.load()
    assert f"copy SAFEEqualiserUserData.csv ({len(BODY)} bytes, SHA-256" in str(caught.value)
    assert not target.exists()


def test_missing_file_without_url(tmp_path):
    dataset = SafeDbRawDataset(filepath=str(tmp_path / "SAFE.csv"))
    with pytest.raises(DatasetError, match="no download URL is configured"):
        dataset.load()


def test_existing_file_is_used_as_is_without_network(tmp_path):
    target = tmp_path / "SAFE.csv"
    target.write_bytes(b"a user's own export\n")
    dataset = _dataset(target, f"http://127.0.0.1:{_closed_port()}/never-called")
    assert dataset.load() == b"a user's own export\n"


def test_dataset_is_read_only(tmp_path):
    dataset = _dataset(tmp_path / "SAFE.csv", "http://127.0.0.1:1/")
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(b"new content")


def test_a_download_killed_outright_leaves_a_part_file_that_the_next_one_removes(tmp_path, server):
    target = tmp_path / "raw" / "SAFE.csv"
    script = (
        "import sys; from pathlib import Path\n"
        "from neural_eq_morphing.datasets.safe_db_dataset import download_verified\n"
        "download_verified(sys.argv[1], Path(sys.argv[2]), timeout=60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, f"{server}/slow", str(target)])
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in _parts(target)):
            assert child.poll() is None, "the download stopped by itself"
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.1)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    (left,) = _parts(target)  # SIGKILL: no clean-up ran

    # A download in progress elsewhere holds a lock on its file: that one is kept.
    live = target.parent / f".{target.name}.live.part"
    with open(live, "wb") as held:
        assert try_lock(held)
        assert _dataset(target, f"{server}/good").load() == BODY
        assert not left.exists()
        assert live.exists()
    assert target.read_bytes() == BODY


def _parts(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*.part")) if target.parent.exists() else []
