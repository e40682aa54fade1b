"""The project's commands: one-line user errors, a UI whose server stops with it, samples."""

from __future__ import annotations

import json
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
import numpy as np
import pytest
from click.testing import CliRunner
from kedro.io.core import DatasetError

from neural_eq_morphing import trained
from neural_eq_morphing.__main__ import main
from neural_eq_morphing.cli import _with_user_errors
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETER_NAMES, UPPER_LIMITS
from neural_eq_morphing.errors import UserError
from neural_eq_morphing.warning_filters import UninformativeWarnings, install, is_uninformative
from tests.browser.conftest import free_port
from tests.test_serving import small_semantic_eq


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


@pytest.fixture
def small_model(monkeypatch: pytest.MonkeyPatch):
    """``neural-eq-morphing`` on a small model instead of a trained run's (no Kedro run)."""
    semantic_eq = small_semantic_eq()

    def load(design: str = "log2", *args, **kwargs):
        return semantic_eq, "2024-01-02T03.04.05.678Z"

    monkeypatch.setattr(trained, "load_semantic_eq", load)
    return semantic_eq


def _preset(*args: str):
    return CliRunner().invoke(main, ["preset", *args], catch_exceptions=False)


def _table(output: str) -> np.ndarray:
    """The printed samples ``(n, 13)`` of ``preset --samples n``."""
    header, *rows = output.splitlines()
    assert header.split() == ["sample", *map(str, range(len(header.split()) - 1))]
    assert [row.split()[0] for row in rows] == list(PARAMETER_NAMES)
    return np.array([[float(value) for value in row.split()[1:]] for row in rows]).T


def test_preset_samples_prints_distinct_settings_the_seed_repeats(small_model, tmp_path):
    first = _preset("--words", "warm", "--samples", "5", "--seed", "3")
    assert first.exit_code == 0, first.output
    samples = _table(first.output)
    assert samples.shape == (5, len(PARAMETER_NAMES))
    assert len(np.unique(samples, axis=0)) == 5
    assert np.all((samples >= LOWER_LIMITS - 0.005) & (samples <= UPPER_LIMITS + 0.005))
    expected = small_model.sample_presets("warm", count=5, seed=3)
    np.testing.assert_allclose(samples, expected, atol=0.005 + 1e-9)
    assert _preset("--words", "warm", "--samples", "5", "--seed", "3").output == first.output
    other = _preset("--words", "warm", "--samples", "5", "--seed", "4")
    assert other.exit_code == 0
    assert not np.array_equal(_table(other.output), samples)

    path = tmp_path / "warm.json"
    written = _preset("-w", "warm", "--samples", "5", "--seed", "3", "--json", str(path))
    assert written.output == first.output + f"Wrote {path}\n"
    document = json.loads(path.read_text())
    assert document["seed"] == 3
    assert "parameters" not in document
    assert [list(sample) for sample in document["samples"]] == [list(PARAMETER_NAMES)] * 5
    np.testing.assert_allclose([list(s.values()) for s in document["samples"]], expected)


def test_preset_without_samples_prints_the_one_preset(small_model, tmp_path):
    path = tmp_path / "warm.json"
    result = _preset("--words", "warm", "--json", str(path))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:13]] == list(PARAMETER_NAMES)
    assert lines[13:] == [f"Wrote {path}"]
    document = json.loads(path.read_text())
    assert "samples" not in document
    assert "seed" not in document
    np.testing.assert_allclose(list(document["parameters"].values()), small_model.preset("warm"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samples", "0"], "Error: --samples must be at least 1, got 0"),
        (["--samples", "-3"], "Error: --samples must be at least 1, got -3"),
        (["--samples", "2", "--seed", "-1"], "Error: --seed must be at least 0, got -1"),
        (["--samples", "2", "-w", "wram"], "Error: unknown word 'wram'; did you mean 'warm'?"),
    ],
    ids=["zero", "negative", "negative seed", "unknown word"],
)
def test_bad_samples_are_one_line(small_model, args, message):
    result = _preset("-w", "warm", *args)
    assert result.exit_code == 1
    assert result.output.splitlines() == [result.output.strip()]
    assert result.output.startswith(message)


def test_samples_of_a_model_without_spread_are_one_line(monkeypatch):
    old = small_semantic_eq(spread=False)
    monkeypatch.setattr(trained, "load_semantic_eq", lambda *args, **kwargs: (old, "old"))
    result = _preset("-w", "warm", "--samples", "2")
    assert result.exit_code == 1
    assert result.output.startswith("Error: this model was saved without its words' spread")
    assert len(result.output.splitlines()) == 1
    assert _preset("-w", "warm").exit_code == 0  # its single preset still works


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
