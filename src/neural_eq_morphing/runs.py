"""A ledger of pipeline runs: which finished, which are still running, which died.

Kedro names every file a run saves after the run's version (its session id), and by
default loads "the newest" version of each dataset. On its own that mixes runs: a run
still in progress, or one killed during its final saves, has written some files of a set
(a model) but not the others (its normaliser, its history), and two runs at once read
each other's files. The ledger records, per run version, one small file in a folder:

* ``<version>.running`` while the run is alive. The run holds an exclusive ``flock`` on
  it for its whole life; the kernel releases the lock when the process dies however it
  dies (SIGKILL included), so any later run can tell a live run from a dead one.
* ``<version>.done`` once the run has finished (the names of the datasets it wrote),
  ``<version>.failed`` when it stopped on an error, ``<version>.killed`` when it was
  interrupted or found dead.

Only versions with a ``.done`` file count as "the newest" (:meth:`RunLedger.finished`).
The module knows nothing of Kedro or MLflow; ``neural_eq_morphing.hooks`` uses it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

try:  # POSIX; elsewhere no run is ever judged dead
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

RUNNING, DONE, FAILED, KILLED = "running", "done", "failed", "killed"
ENDINGS = (DONE, FAILED, KILLED)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as sink:
            sink.write(text)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def try_lock(stream: IO[Any]) -> bool:
    """Take an exclusive lock on ``stream`` without waiting; ``False`` when another holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        return False
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def wait_for_lock(stream: IO[Any], timeout_s: float = 60.0) -> bool:
    """Take an exclusive lock on ``stream``, waiting up to ``timeout_s`` for its holder.

    Returns:
        Whether the lock was taken (``False`` after the timeout: a holder that never lets
        go, e.g. a notebook whose context creation failed half-way, must not hang others).
    """
    deadline = time.monotonic() + timeout_s
    while not try_lock(stream):
        if fcntl is None or time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class RunLedger:
    """The run files in ``folder`` (created on first use).

    Args:
        folder: Where the ``<version>.<state>`` files live, e.g. ``data/run_ledger``.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._held: dict[str, IO[Any]] = {}

    def _path(self, version: str, state: str) -> Path:
        return self.folder / f"{version}.{state}"

    def _versions(self, state: str) -> list[str]:
        if not self.folder.is_dir():
            return []
        suffix = f".{state}"
        return sorted(
            path.name[: -len(suffix)]
            for path in self.folder.iterdir()
            if path.name.endswith(suffix) and not path.name.startswith(".")
        )

    def start(self, version: str, info: dict[str, Any]) -> None:
        """Record that the run ``version`` is running, and hold its lock until it ends.

        The file is written and locked under a temporary name, then renamed, so no other
        run ever sees it unlocked while this one lives.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{version}.")
        stream = os.fdopen(handle, "w+", encoding="utf-8")
        try_lock(stream)
        json.dump({"version": version, "pid": os.getpid(), **info}, stream, default=str)
        stream.flush()
        os.replace(temporary, self._path(version, RUNNING))
        self._held[version] = stream

    def finish(self, version: str, state: str, info: dict[str, Any] | None = None) -> None:
        """Record how the run ``version`` ended (``done``, ``failed`` or ``killed``).

        The ending is written before the ``.running`` file goes, so a run is never without
        a state file.
        """
        if state not in ENDINGS:
            raise ValueError(f"a run ends as one of {', '.join(ENDINGS)}, not {state!r}")
        record = {
            "version": version,
            "state": state,
            "ended": datetime.now(UTC).isoformat(timespec="seconds"),
            **(info or {}),
        }
        write_atomically(self._path(version, state), json.dumps(record, indent=1, default=str))
        with suppress(FileNotFoundError):
            self._path(version, RUNNING).unlink()
        stream = self._held.pop(version, None)
        if stream is not None:
            stream.close()

    def is_open(self, version: str) -> bool:
        """Whether this process started ``version`` and has not finished it."""
        return version in self._held

    def finished(self) -> list[str]:
        """Versions of the runs that finished, newest first."""
        return self._versions(DONE)[::-1]

    def dead(self) -> list[str]:
        """Versions recorded as running whose process is gone (nobody holds their lock)."""
        dead = []
        for version in self._versions(RUNNING):
            if version in self._held:
                continue
            try:
                with open(self._path(version, RUNNING), encoding="utf-8") as stream:
                    if try_lock(stream):
                        dead.append(version)
            except FileNotFoundError:  # it ended meanwhile
                continue
        return dead

    def state_of(self, versions: Iterable[str]) -> dict[str, str]:
        """The recorded state of each version (``unknown`` when the ledger has none)."""
        states = {}
        for version in versions:
            found = [state for state in (*ENDINGS, RUNNING) if self._path(version, state).exists()]
            states[version] = found[0] if found else "unknown"
        return states
