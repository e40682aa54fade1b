"""The project's commands: one-line user errors, and a UI whose server stops with it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from kedro.io.core import DatasetError

from neural_eq_morphing.cli import _with_user_errors
from neural_eq_morphing.errors import UserError
from neural_eq_morphing.warning_filters import UninformativeWarnings, install, is_uninformative
from tests.browser.conftest import free_port


class _BadInput(UserError, ValueError):
    pass


def _command(error: Exception) -> click.Command:
    @click.command()
    def fails() -> None:
        raise error

    return _with_user_errors(fails)


def test_a_user_error_wrapped_by_kedro_prints_one_line():
    try:
        try:
            raise _BadInput("the raw file is\n  truncated: copy it again")
        except _BadInput as cause:
            raise DatasetError("Failed while loading data from dataset safe_db_raw") from cause
    except DatasetError as wrapped:
        error = wrapped
    result = CliRunner().invoke(_command(error))
    assert result.exit_code == 1
    assert result.output == "Error: the raw file is truncated: copy it again\n"


def test_a_bug_keeps_its_traceback():
    result = CliRunner().invoke(_command(KeyError("oops")))
    assert result.exit_code == 1
    assert isinstance(result.exception, KeyError)


def test_the_listed_warnings_are_filtered_and_others_are_not():
    install()
    install()  # idempotent
    captured = logging.getLogger("py.warnings")
    assert sum(isinstance(f, UninformativeWarnings) for f in captured.filters) == 1
    assert is_uninformative("\x1b[33mAdd type hints to the `predict` method to enable ...")
    assert is_uninformative("register_new_resolver() is deprecated and will be removed")
    assert not is_uninformative("Found 3 out-of-range settings")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


def _group(pgid: int) -> list[int]:
    listing = subprocess.run(
        ["ps", "-eo", "pid=,pgid="], capture_output=True, text=True, check=True
    )
    rows = [line.split() for line in listing.stdout.splitlines()]
    return [int(pid) for pid, group in rows if int(group) == pgid]


@pytest.mark.integration
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_stopping_kedro_mlflow_ui_stops_its_server(kedro_project: Path, stop: signal.Signals):
    port = free_port()
    kedro = subprocess.Popen(
        [sys.executable, "-m", "kedro", "mlflow", "ui", "--port", str(port)],
        cwd=kedro_project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group, so the test can tell what it left behind
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while not _answers(url):
            assert kedro.poll() is None, "kedro mlflow ui exited"
            assert time.monotonic() < deadline, "the MLflow UI never answered"
            time.sleep(0.5)
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(kedro.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert children, "no server process under kedro"
        server_group = os.getpgid(int(children[0]))
        assert server_group != kedro.pid  # the server runs in a group of its own

        os.kill(kedro.pid, stop)  # the kedro process only, as a terminal or a supervisor would
        kedro.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _group(server_group):
            assert time.monotonic() < deadline, f"left running: {_group(server_group)}"
            time.sleep(0.2)
        assert not _answers(url)
    finally:
        if kedro.poll() is None:
            os.killpg(kedro.pid, signal.SIGKILL)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("split.seed=abc", "Error: parameter 'split.seed': input should be a valid integer"),
        ("terms.min_exmaples=3", "did you mean 'terms.min_examples'?"),
        ("", "could not be downloaded from http://127.0.0.1:"),
    ],
    ids=["wrong type", "typo", "no raw file and no network"],
)
def test_kedro_run_prints_a_user_error_as_one_line(kedro_project: Path, params, expected):
    # No raw file, and its download URL a closed port: the machine is offline.
    catalog = kedro_project / "conf/base/catalog.yml"
    closed = free_port()
    catalog.write_text(
        catalog.read_text().replace(
            "url: ${globals:safe_db.url}", f"url: http://127.0.0.1:{closed}/SAFE.csv"
        )
    )
    args = ["--params", params] if params else []
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipelines", "data_processing", *args],
        cwd=kedro_project,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "250"},
    )
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert result.returncode == 1
    assert len(errors) == 1, output[-3000:]
    assert expected in errors[0]
    assert "Traceback" not in output
    assert "UserWarning" not in output  # the uninformative third-party warnings are gone
    assert not list((kedro_project / "data").rglob("*.parquet"))
