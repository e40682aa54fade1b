"""Raw bytes to and from one file (local or any fsspec filesystem), e.g. a PNG figure."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, get_filepath_str, get_protocol_and_path


class BinaryFileDataset(AbstractDataset[bytes, bytes]):
    """Save and load a file's bytes unchanged.

    Example catalog entry (one PNG per partition)::

        results_figures:
          type: partitions.PartitionedDataset
          path: docs/images/results
          dataset: neural_eq_morphing.datasets.binary_file.BinaryFileDataset
          filename_suffix: .png
    """

    def __init__(
        self,
        filepath: str,
        fs_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "protocol": self._protocol}

    def load(self) -> bytes:
        """The file's bytes."""
        with self._fs.open(get_filepath_str(self._filepath, self._protocol), "rb") as file:
            return file.read()

    def save(self, data: bytes) -> None:
        """Write ``data`` to the file, creating its folder."""
        if not isinstance(data, bytes | bytearray):
            raise TypeError(f"BinaryFileDataset saves bytes, got {type(data).__name__}")
        path = get_filepath_str(self._filepath, self._protocol)
        self._fs.mkdirs(str(PurePosixPath(path).parent), exist_ok=True)
        with self._fs.open(path, "wb") as file:
            file.write(data)

    def _exists(self) -> bool:
        return self._fs.exists(get_filepath_str(self._filepath, self._protocol))
