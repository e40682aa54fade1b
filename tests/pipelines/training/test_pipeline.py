"""Every design through its namespaced training pipeline, tracked in a temporary MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.pipelines.training.nodes import HISTORY_METRICS
from tests.conftest import DESIGNS, SAFE_DB_SHA256, SHORT_EPOCHS, project_parameters

pytestmark = pytest.mark.integration

EPOCHS = SHORT_EPOCHS


@pytest.fixture(scope="module")
def trained(short_run):
    return short_run["catalog"], short_run["client"], short_run["experiment"], short_run["runs"]


def test_every_design_is_tracked_in_one_run(trained):
    catalog, client, _, runs = trained
    assert len(runs) == 1
    run = runs[0]
    run_id = run.info.run_id
    designs = project_parameters("designs")["designs"]

    assert run.data.tags["design"] == ",".join(sorted(DESIGNS))
    assert run.info.run_name == " + ".join(f"{d} seed 42" for d in sorted(DESIGNS))
    assert run.data.tags["safe_db_sha256"] == SAFE_DB_SHA256
    assert run.data.tags["git_commit"]

    for design in DESIGNS:
        assert run.data.tags[f"{design}.seed"] == "42"
        assert run.data.params[f"designs.{design}.training.epochs"] == str(EPOCHS)
        batch = designs[design]["training"]["batch_size"]
        assert run.data.params[f"designs.{design}.training.batch_size"] == str(batch)
        for metric in HISTORY_METRICS:
            history = client.get_metric_history(run_id, f"{design}.{metric}")
            assert len(history) == EPOCHS, f"{design}.{metric}"
        local = catalog.load(f"{design}.training_history")
        logged = sorted(
            (m.step, m.value) for m in client.get_metric_history(run_id, f"{design}.train_loss")
        )
        assert [step for step, _ in logged] == local["epoch"].tolist()
        np.testing.assert_allclose([value for _, value in logged], local["train_loss"])
        artifacts = [a.path for a in client.list_artifacts(run_id, design)]
        assert f"{design}/decoder_normaliser.json" in artifacts

    # Log 1's reconstruction compares dB/Hz/Q outputs with z-scores: huge, recorded as is.
    log1 = catalog.load("log1.training_history")
    log2 = catalog.load("log2.training_history")
    assert np.isfinite(log1["train_reconstruction"]).all()
    assert log1["train_reconstruction"].iloc[-1] > 100 * log2["train_reconstruction"].iloc[-1]


@pytest.fixture
def short_run_store(trained):
    """Point MLflow at the short run's store: other tests' sessions may have moved it."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(trained[1].tracking_uri)
    yield
    mlflow.set_tracking_uri(previous)


@pytest.mark.usefixtures("short_run_store")
def test_logged_log2_model_reproduces_the_catalog_embeddings(trained):
    catalog, client, experiment, runs = trained
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    by_name = {model.name: model for model in models}
    assert {f"{design}_semantic_eq" for design in DESIGNS} <= set(by_name)
    assert by_name["log2_semantic_eq"].source_run_id == runs[0].info.run_id

    # The logged model takes settings in plug-in units and gives their latents back.
    loaded = mlflow.pyfunc.load_model(by_name["log2_semantic_eq"].model_uri)
    embeddings = catalog.load("log2.latent_embeddings").set_index("entry_id")
    settings = catalog.load("settings_filtered").set_index("entry_id").loc[embeddings.index]
    assert len(embeddings) == 1089
    semantic_eq = loaded.get_raw_model()
    predicted = semantic_eq.encode_settings(settings[list(PARAMETER_NAMES)].reset_index(drop=True))
    latent = predicted.filter(like="latent_")
    assert list(latent.columns) == list(embeddings.filter(like="latent_").columns)
    np.testing.assert_allclose(latent.to_numpy(), embeddings.filter(like="latent_"), atol=1e-5)
    assert predicted.filter(like="decoded_").shape == (1089, 13)

    local = catalog.load("log2.model")
    raw = semantic_eq.model
    for key, value in local.state_dict().items():
        assert torch.equal(value, raw.state_dict()[key])

    # Words in, EQ out: a word gives its centroid's decoded preset (the evaluation's table),
    # a morph half-way is the even blend, and the registry's alias serves this version.
    presets = catalog.load("log2.generated_presets").set_index("term")
    requests = pd.DataFrame(
        [
            {"words": "warm"},
            {"words": "warm=0.5,bright=0.5"},
            {"words": "warm", "morph_to": "bright", "position": 0.5, "amount": 1.0},
        ]
    )
    answers = loaded.predict(requests)
    assert list(answers.columns) == list(PARAMETER_NAMES)
    np.testing.assert_allclose(
        answers.iloc[0], presets.loc["warm", list(PARAMETER_NAMES)], rtol=1e-5
    )
    np.testing.assert_allclose(answers.iloc[1], answers.iloc[2], rtol=1e-6)
    current = client.get_model_version_by_alias("log2_semantic_eq", "current")
    assert current.run_id == runs[0].info.run_id
    served = mlflow.pyfunc.load_model("models:/log2_semantic_eq@current").predict(requests)
    pd.testing.assert_frame_equal(served, answers)


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for an attacker's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.usefixtures("short_run_store")
def test_a_tampered_logged_model_does_not_run_its_payload(trained, tmp_path):
    _, client, experiment, _ = trained
    model = client.search_logged_models(
        experiment_ids=[experiment.experiment_id], filter_string="name = 'log2_semantic_eq'"
    )[0]
    folder = tmp_path / "log2_semantic_eq"
    mlflow.artifacts.download_artifacts(model.model_uri, dst_path=str(folder))
    (weights,) = folder.rglob("model.pt")
    assert "pickle" not in (folder / "MLmodel").read_text()

    marker = tmp_path / "payload_ran"
    torch.save({"format": "neural_eq_morphing.model/1", "x": _Payload(marker)}, weights)
    with pytest.raises(Exception, match="tampered"):
        mlflow.pyfunc.load_model(str(folder))
    assert not marker.exists()

    # The payload is real: plain unpickling (what mlflow.pytorch models use) runs it.
    torch.load(weights, weights_only=False)
    assert marker.exists()
