"""The raw SAFE-DB file as a read-only Kedro dataset that fetches itself when missing.

``load()`` returns the file's bytes. When the file is not there, it is downloaded from
the archived URL, checked against the published size and SHA-256, and only then moved
into place (atomically, through a temporary file in the same folder), so a failed or
partial download never leaves a file behind.

Works around: kedro-datasets 9.x has no dataset that fetches a missing file and checks
its size and checksum before anything reads it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_filepath_str, get_protocol_and_path

from neural_eq_morphing.errors import UserError
from neural_eq_morphing.runs import try_lock

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 64 * 1024


class DownloadError(UserError, RuntimeError):
    """A download failed or its content did not match what was published."""


class MissingRawFileError(UserError, DatasetError):
    """The raw file is missing and could not be downloaded (the message says what to do)."""


def sha256_of(data: bytes) -> str:
    """Return the hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def download_verified(
    url: str,
    destination: Path,
    *,
    sha256: str | None = None,
    size_bytes: int | None = None,
    timeout: float = 60.0,
) -> None:
    """Download ``url`` to ``destination``, verify it, then move it into place atomically.

    The body is written to a hidden temporary file beside ``destination``; that file is
    renamed onto ``destination`` only after the size and SHA-256 match. On any failure
    the temporary file is removed and ``destination`` is left as it was.

    Raises:
        DownloadError: On network or HTTP errors, a truncated body, or a size or
            checksum that differs from the expected one.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(destination)
    handle, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
    )
    digest = hashlib.sha256()
    received = 0
    try:
        with os.fdopen(handle, "wb") as sink:
            try_lock(sink)  # held while downloading: a live download's file is not stale
            for chunk in _chunks(url, timeout):
                try:
                    sink.write(chunk)
                except OSError as exc:
                    raise DownloadError(f"could not write to {destination.parent}: {exc}") from exc
                digest.update(chunk)
                received += len(chunk)
        if size_bytes is not None and received != size_bytes:
            raise DownloadError(f"downloaded {received:,} bytes, expected {size_bytes:,}")
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise DownloadError(
                f"the downloaded file's SHA-256 is {digest.hexdigest()}, expected {sha256}"
            )
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def remove_stale_parts(destination: Path) -> list[Path]:
    """Remove the ``.part`` files that interrupted downloads of ``destination`` left.

    A download killed outright (SIGKILL, power loss) cannot clean up after itself; its
    temporary file stays, unlocked. A download in progress holds a lock on its own, so
    it is left alone.

    Returns:
        The files removed.
    """
    removed = []
    for part in destination.parent.glob(f".{destination.name}.*.part"):
        try:
            with open(part, "rb") as stream:
                if not try_lock(stream):
                    continue
            part.unlink()
        except FileNotFoundError:
            continue
        logger.info("Removed %s, left by an interrupted download", part.name)
        removed.append(part)
    return removed


def _chunks(url: str, timeout: float) -> Iterator[bytes]:
    """Yield the response body of ``url``; network and HTTP failures become DownloadError."""
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            announced = response.headers.get("Content-Length")
            while chunk := response.read(_CHUNK_BYTES):
                received += len(chunk)
                yield chunk
        if announced is not None and received != int(announced):
            raise http.client.IncompleteRead(b"", int(announced) - received)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"the server answered HTTP {exc.code} {exc.reason}") from exc
    except http.client.IncompleteRead as exc:
        raise DownloadError(
            f"the download was cut short after {received + len(exc.partial):,} bytes"
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"the server could not be reached ({reason})") from exc


class SafeDbRawDataset(AbstractDataset[None, bytes]):
    """Read-only dataset for ``SAFEEqualiserUserData.csv`` that downloads it when missing.

    Example catalog entry::

        safe_db_raw:
          type: neural_eq_morphing.datasets.safe_db_dataset.SafeDbRawDataset
          filepath: data/01_raw/SAFEEqualiserUserData.csv
          url: ${globals:safe_db.url}
          sha256: ${globals:safe_db.sha256}
          size_bytes: ${globals:safe_db.size_bytes}

    A local file is used as it is, whatever its checksum (it may be a user's own
    export); the ``data_processing`` pipeline compares the checksum and warns.
    """

    def __init__(
        self,
        *,
        filepath: str,
        url: str | None = None,
        sha256: str | None = None,
        size_bytes: int | None = None,
        timeout: float = 60.0,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            filepath: Where the raw file lives (local path or fsspec URL).
            url: Where to download it from when it is missing; ``None`` disables download.
            sha256: Published SHA-256 a download must match.
            size_bytes: Published size a download must match.
            timeout: Network timeout in seconds.
            fs_args: Extra arguments for the fsspec filesystem.
            metadata: Free-form metadata (e.g. the kedro-viz layer); not used here.
        """
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol, **(fs_args or {}))
        self._url = url
        self._sha256 = sha256
        self._size_bytes = size_bytes
        self._timeout = timeout
        self.metadata = metadata

    def _path_str(self) -> str:
        return get_filepath_str(self._filepath, self._protocol)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._path_str(), "url": self._url, "sha256": self._sha256}

    def _exists(self) -> bool:
        return self._fs.exists(self._path_str())

    def _missing_message(self, reason: str) -> str:
        where = self._path_str()
        published = ", ".join(
            part
            for part in (
                f"{self._size_bytes:,} bytes" if self._size_bytes else "",
                f"SHA-256 {self._sha256}" if self._sha256 else "",
            )
            if part
        )
        return (
            f"The raw SAFE-DB file is missing at '{where}' and could not be downloaded "
            f"from {self._url}: {reason}. Nothing was written. Without internet access, "
            f"copy SAFEEqualiserUserData.csv ({published or 'from the SAFE project'}) to "
            f"'{where}' and run again."
        )

    def _download(self) -> None:
        if not self._url:
            raise MissingRawFileError(self._missing_message("no download URL is configured"))
        logger.info("Downloading the raw SAFE-DB file from %s", self._url)
        try:
            if self._protocol == "file":
                download_verified(
                    self._url,
                    Path(self._path_str()),
                    sha256=self._sha256,
                    size_bytes=self._size_bytes,
                    timeout=self._timeout,
                )
            else:
                with tempfile.TemporaryDirectory() as folder:
                    local = Path(folder) / self._filepath.name
                    download_verified(
                        self._url,
                        local,
                        sha256=self._sha256,
                        size_bytes=self._size_bytes,
                        timeout=self._timeout,
                    )
                    self._fs.put_file(str(local), self._path_str())
        except DownloadError as exc:
            # The message names the cause; its chain (socket, urllib) is no help to a user.
            raise MissingRawFileError(self._missing_message(str(exc))) from None
        logger.info("Saved the verified raw SAFE-DB file to %s", self._path_str())

    def load(self) -> bytes:
        """Return the raw file's bytes, downloading and verifying it first if missing."""
        if not self._exists():
            self._download()
        with self._fs.open(self._path_str(), mode="rb") as source:
            return source.read()

    def save(self, data: None) -> None:
        """Refuse to write: the raw layer is read-only."""
        raise DatasetError(
            "SafeDbRawDataset is read-only: the raw layer is never written by the pipeline"
        )
