"""The run ledger: finished, failed and killed runs, and runs whose process is gone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neural_eq_morphing.runs import RunLedger, wait_for_lock, write_atomically


def _in_another_process(folder: Path, version: str, then: str) -> subprocess.Popen:
    """Start ``version`` in a child process, which then runs ``then`` (Python code)."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from neural_eq_morphing.runs import RunLedger
        ledger = RunLedger({str(folder)!r})
        ledger.start({version!r}, {{"pipelines": ["training"]}})
        print("started", flush=True)
        {then}
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    return child


def test_a_finished_run_is_listed_newest_first(tmp_path):
    ledger = RunLedger(tmp_path)
    for version in ("2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"):
        ledger.start(version, {"pipelines": ["training"]})
        assert ledger.is_open(version)
        assert ledger.state_of([version]) == {version: "running"}
        ledger.finish(version, "done", {"outputs": ["log2.model"]})
        assert not ledger.is_open(version)
    ledger.start("2026-01-03T00.00.00.000Z", {})
    ledger.finish("2026-01-03T00.00.00.000Z", "failed")
    assert ledger.finished() == ["2026-01-02T00.00.00.000Z", "2026-01-01T00.00.00.000Z"]
    record = json.loads((tmp_path / "2026-01-02T00.00.00.000Z.done").read_text())
    assert record["outputs"] == ["log2.model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "2026-01-01T00.00.00.000Z.done",
        "2026-01-02T00.00.00.000Z.done",
        "2026-01-03T00.00.00.000Z.failed",
    ]


def test_a_run_whose_process_is_gone_is_dead_and_a_live_one_is_not(tmp_path):
    ledger = RunLedger(tmp_path)
    ledger.start("mine", {})  # this process: alive
    gone = _in_another_process(tmp_path, "gone", "import os; os._exit(0)")
    gone.wait()
    alive = _in_another_process(tmp_path, "alive", "time.sleep(60)")
    try:
        assert ledger.dead() == ["gone"]
        assert ledger.state_of(["alive", "gone", "mine", "nowhere"]) == {
            "alive": "running",
            "gone": "running",
            "mine": "running",
            "nowhere": "unknown",
        }
    finally:
        alive.kill()
        alive.wait()
    assert ledger.dead() == ["alive", "gone"]  # SIGKILL releases the lock too
    ledger.finish("gone", "killed", {"reason": "process gone"})
    assert ledger.dead() == ["alive"]
    assert ledger.state_of(["gone"]) == {"gone": "killed"}


def test_an_unknown_ending_is_refused(tmp_path):
    ledger = RunLedger(tmp_path)
    ledger.start("v", {})
    with pytest.raises(ValueError, match="done, failed, killed"):
        ledger.finish("v", "finished")


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path):
    target = tmp_path / "record.json"
    write_atomically(target, "old")

    with pytest.raises(TypeError):
        write_atomically(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_a_lock_that_is_never_released_times_out(tmp_path):
    path = tmp_path / "lock"
    path.touch()
    hold = f"import fcntl; held = open({str(path)!r}); fcntl.flock(held, fcntl.LOCK_EX)"
    holder = _in_another_process(
        tmp_path, "holder", f"{hold}; print('held', flush=True); time.sleep(60)"
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with open(path) as stream:
            assert not wait_for_lock(stream, timeout_s=0.3)
    finally:
        holder.kill()
        holder.wait()
    with open(path) as stream:
        assert wait_for_lock(stream, timeout_s=5)
