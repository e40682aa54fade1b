"""Concurrent and killed ``kedro run``s: each run reads what it wrote, "newest" is finished.

Real ``kedro run`` processes on a throw-away copy of the project with the real SAFE-DB
file, sharing one MLflow store, as two users of one checkout would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import make_real_project, project_parameters, short_designs_cli

pytestmark = pytest.mark.integration

LEDGER = Path("data/run_ledger")
HEALTH_WINDOW = project_parameters("evaluation")["evaluation"]["health_window"]
#: Every design shortened to 3 epochs (the processes, not the training, are the point).
SHORT = short_designs_cli(3)
#: Every design long enough for a run to be killed while it trains.
LONG = short_designs_cli(5000)


def store(project: Path) -> MlflowClient:
    """A client of the project's own MLflow store.

    Explicitly: an earlier test's Kedro session may have set this process's tracking URI,
    which would win over ``MLFLOW_TRACKING_URI``.
    """
    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def start(project: Path, *args: str) -> subprocess.Popen:
    """Start ``kedro run <args>`` in ``project`` (its MLflow store from the environment)."""
    return subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def finish(process: subprocess.Popen, timeout: float = 900) -> str:
    """Wait for a run; return its output, failing the test when it did not succeed."""
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def ledger(project: Path, state: str) -> dict[str, dict]:
    """The ledger's records in ``state`` (done, failed, killed, running), by version."""
    folder = project / LEDGER
    records = {}
    for path in sorted(folder.glob(f"*.{state}")):
        text = path.read_text()
        records[path.name[: -len(state) - 1]] = json.loads(text) if text else {}
    return records


def versioned(project: Path, relative: str, version: str) -> Path:
    """The file that a dataset at ``relative`` (e.g. ``data/…/model.pt``) has at ``version``."""
    path = project / relative
    return path / version / path.name


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    return make_real_project(tmp_path, monkeypatch)


def test_two_runs_at_once_each_record_their_own_seed(project):
    runs = [
        start(
            project,
            "--params",
            f"designs.log2.training.seed={seed},designs.log2.training.epochs=24",
        )
        for seed in (1, 2)
    ]
    for run in runs:
        finish(run)

    client = store(project)
    experiment = client.get_experiment_by_name("neural_eq_morphing")
    by_seed = {r.data.tags["log2.seed"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(by_seed) == {"1", "2"}
    assert set(ledger(project, "done")) == {r.data.tags["run_id"] for r in by_seed.values()}

    histories, plots = {}, {}
    for seed, run in by_seed.items():
        version = run.data.tags["run_id"]
        history = pd.read_parquet(
            versioned(project, "data/07_model_output/log2/training_history.parquet", version)
        )
        # MLflow's loss history is this run's own history ...
        logged = sorted(
            (m.step, m.value) for m in client.get_metric_history(run.info.run_id, "log2.train_loss")
        )
        assert [step for step, _ in logged] == history["epoch"].tolist()
        np.testing.assert_allclose([value for _, value in logged], history["train_loss"])
        # ... and so are its evaluation (training health) and its MLflow metrics of it.
        evaluation = json.loads(
            versioned(
                project, "data/08_reporting/log2/evaluation_metrics.json", version
            ).read_text()
        )
        assert evaluation["metrics"]["final_train_loss"] == pytest.approx(
            history["train_loss"].iloc[-1]
        )
        window = history["train_contrastive"].iloc[-HEALTH_WINDOW:].mean()
        assert evaluation["training_health"]["contrastive_last"] == pytest.approx(window)
        assert run.data.metrics["log2.eval.final_train_loss"] == pytest.approx(
            history["train_loss"].iloc[-1]
        )
        # The plot logged to the run is the one drawn from this run's history.
        plot = versioned(project, "data/08_reporting/log2/training_curves.png", version)
        logged_plot = Path(
            client.download_artifacts(run.info.run_id, "log2/plots/training_curves.png")
        )
        assert logged_plot.read_bytes() == plot.read_bytes()
        histories[seed], plots[seed] = history, plot.read_bytes()

    assert not np.allclose(histories["1"]["train_loss"], histories["2"]["train_loss"])
    assert plots["1"] != plots["2"]


def _finished_training(project: Path) -> str:
    finish(start(project, "--pipelines", "data_processing,training", "--params", SHORT))
    (version,) = ledger(project, "done")
    return version


def _evaluation_inputs(project: Path, before: set[str]) -> dict[str, str]:
    """Run the evaluation; return the version each of its inputs was read at."""
    finish(start(project, "--pipelines", "evaluation"))
    done = ledger(project, "done")
    (evaluation,) = set(done) - before
    assert not ledger(project, "running")
    return done[evaluation]["inputs"]


def _mlflow_run(project: Path, version: str):
    client = store(project)
    experiment = client.get_experiment_by_name("neural_eq_morphing")
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], f"tags.run_id = '{version}'")
    return runs[0] if runs else None


def _assert_killed_in_mlflow(project: Path, version: str) -> None:
    client = store(project)
    experiment = client.get_experiment_by_name("neural_eq_morphing")
    run = _mlflow_run(project, version)
    assert run.info.status == "KILLED"
    models = client.search_logged_models(
        [experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert all(model.status.name != "PENDING" for model in models)


def test_a_run_killed_during_training_is_never_read_and_is_marked_killed(project):
    finished = _finished_training(project)
    killed = start(project, "--pipelines", "training", "--params", LONG)
    wait_for(lambda: ledger(project, "running"), "the training run to start")
    (version,) = ledger(project, "running")
    wait_for(lambda: _mlflow_run(project, version) is not None, "the run's MLflow run")
    time.sleep(3)  # training under way
    kill(killed)

    inputs = _evaluation_inputs(project, {finished})
    assert inputs["log2.model"] == finished
    assert set(inputs.values()) <= {finished}
    assert version in ledger(project, "killed")
    _assert_killed_in_mlflow(project, version)


def test_a_run_killed_during_its_final_saves_leaves_the_last_complete_set(project):
    finished = _finished_training(project)
    killed = start(project, "--pipelines", "training", "--params", SHORT)
    wait_for(lambda: ledger(project, "running"), "the training run to start")
    (version,) = ledger(project, "running")
    model = versioned(project, "data/06_models/log1/model.pt", version)
    wait_for(model.exists, "the killed run's first model file")
    kill(killed)
    # A mismatched newest set: Log 1's new model (maybe its normaliser and history too,
    # depending on when the kill landed), but none of Log 2's, which trains after it.
    assert model.exists()
    assert not versioned(project, "data/06_models/log2/model.pt", version).exists()

    inputs = _evaluation_inputs(project, {finished})
    assert inputs["log1.model"] == finished
    assert inputs["log1.training_history"] == finished
    assert set(inputs.values()) == {finished}
    _assert_killed_in_mlflow(project, version)


def test_only_unfinished_outputs_are_refused_with_one_line(project):
    finish(start(project, "--pipelines", "data_processing"))
    killed = start(project, "--pipelines", "training", "--params", SHORT)
    wait_for(lambda: ledger(project, "running"), "the training run to start")
    (version,) = ledger(project, "running")
    wait_for(versioned(project, "data/06_models/log1/model.pt", version).exists, "a model file")
    kill(killed)

    refused = start(project, "--pipelines", "evaluation")
    output, _ = refused.communicate(timeout=600)
    assert refused.returncode == 1
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output[-3000:]
    # The killed run wrote Log 1's model (and, depending on when the kill landed, its
    # normaliser and history), never Log 2's, which trains after it.
    unfinished = errors[0].split("; and ")[1].split(" written only by runs that did not finish")[0]
    assert "'log1.model'" in unfinished
    assert "log2" not in unfinished
    assert "'log2." in errors[0].split("; and ")[0]  # the first three, sorted
    assert "not produced yet" in errors[0]
    assert "Run `kedro run --pipelines training` first" in errors[0]
    assert "Traceback" not in output


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_by_a_signal_marks_itself_killed(project, stop):
    stopped = start(project, "--pipelines", "data_processing,training", "--params", LONG)
    wait_for(lambda: ledger(project, "running"), "the run to start")
    (version,) = ledger(project, "running")
    wait_for(lambda: _mlflow_run(project, version) is not None, "the run's MLflow run")
    time.sleep(2)
    os.kill(stopped.pid, stop)
    stopped.communicate(timeout=120)
    assert stopped.returncode != 0
    # Marked on its own way out, before any later run could find it dead.
    assert ledger(project, "killed")[version]["reason"] == "interrupted"
    assert not ledger(project, "running")
    assert _mlflow_run(project, version).info.status == "KILLED"
