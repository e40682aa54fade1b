"""MlflowVersionedArtifactDataset: versioned locally or on object storage, logged to MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import mlflow
import pytest
from kedro.io.core import Version

from neural_eq_morphing.datasets.mlflow_artifact import MlflowVersionedArtifactDataset


@pytest.fixture
def mlflow_run(tmp_path: Path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.set_experiment("artifacts")
    with mlflow.start_run() as run:
        yield run, experiment
    mlflow.set_tracking_uri(None)


def logged(run) -> dict:
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="x/m.json")
    return json.loads(Path(path).read_text())


@pytest.mark.parametrize("where", ["local", "memory"])
def test_saved_file_is_versioned_and_logged(where, tmp_path: Path, mlflow_run):
    run, _ = mlflow_run
    root = str(tmp_path / "data") if where == "local" else "memory://bucket/data"
    dataset = MlflowVersionedArtifactDataset(
        dataset={"type": "json.JSONDataset", "filepath": f"{root}/m.json"},
        artifact_path="x",
        # A fixed load version: finding the latest by glob is Kedro's job, not this wrapper's.
        version=Version("2026-01-01T00.00.00.000Z", "2026-01-01T00.00.00.000Z"),
    )
    dataset.save({"a": 1})
    assert dataset.load() == {"a": 1}
    if where == "local":
        stored = Path(root) / "m.json/2026-01-01T00.00.00.000Z/m.json"
        assert json.loads(stored.read_text()) == {"a": 1}
    else:
        stored = [p for p in fsspec.filesystem("memory").find("/") if p.endswith("Z/m.json")]
        assert len(stored) == 1
    assert logged(run) == {"a": 1}


def test_versioned_inner_dataset_is_refused():
    with pytest.raises(Exception, match="not on its inner dataset"):
        MlflowVersionedArtifactDataset(
            dataset={"type": "json.JSONDataset", "filepath": "m.json", "versioned": True}
        )
