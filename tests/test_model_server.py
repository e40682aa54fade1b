"""`mlflow models serve` on the model `kedro run` registered answers over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.trained import load_semantic_eq
from tests.browser.conftest import free_port

pytestmark = pytest.mark.integration


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def server(short_run):
    project = short_run["project"]
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/log2_semantic_eq@current",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                assert process.poll() is None, "mlflow models serve exited"
                assert time.monotonic() < deadline, "the model server never answered"
                time.sleep(0.5)
        yield base, project
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_server_answers_the_same_13_parameters_as_the_python_api(server):
    base, project = server
    requests = [
        {"words": "warm=0.7,bright=0.3", "amount": 0.8},
        {"words": "warm", "morph_to": "bright", "position": 0.25, "amount": -1},
        {"words": "boomy"},
    ]
    status, answer = _post(f"{base}/invocations", {"dataframe_records": requests})
    assert status == 200, answer
    semantic_eq, _ = load_semantic_eq(project_path=project)
    expected = [
        semantic_eq.preset("warm=0.7,bright=0.3", amount=0.8),
        semantic_eq.preset("warm", morph_to="bright", position=0.25, amount=-1.0),
        semantic_eq.preset("boomy"),
    ]
    predictions = answer["predictions"]
    assert len(predictions) == 3
    for row, setting in zip(predictions, expected, strict=True):
        assert list(row) == list(PARAMETER_NAMES)
        np.testing.assert_allclose([row[name] for name in PARAMETER_NAMES], setting, rtol=1e-6)


def test_an_unknown_word_is_a_clear_http_error(server):
    base, _ = server
    status, answer = _post(f"{base}/invocations", {"dataframe_records": [{"words": "wram"}]})
    assert status == 400
    assert "unknown word 'wram'; did you mean 'warm'?" in json.dumps(answer)
