import numpy as np
import pandas as pd
import pytest
import torch

from neural_eq_morphing.eq.normalisers import MinMaxNormaliser
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.models.data import decoder_normaliser
from neural_eq_morphing.models.evaluation import embed_settings
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.pipelines.training.nodes import (
    HISTORY_METRICS,
    history_to_metrics,
    train_model,
)
from tests.conftest import project_parameters

PARAMS = list(PARAMETER_NAMES)


def _table(rng: np.random.Generator, rows: int, start: int) -> pd.DataFrame:
    frame = pd.DataFrame(rng.random((rows, len(PARAMS))), columns=PARAMS)
    frame.insert(0, "term", np.where(np.arange(rows) % 2, "warm", "bright"))
    frame.insert(0, "contributor_id", [f"c{i % 3:04d}" for i in range(rows)])
    frame.insert(0, "entry_id", np.arange(start, start + rows))
    return frame


def _training(**overrides):
    """Log 2's training block from parameters_designs.yml, shortened for a unit test."""
    block = project_parameters("designs")["designs"]["log2"]["training"]
    return {**block, "seed": 3, "epochs": 2, "batch_size": 8, **overrides}


@pytest.fixture
def tables():
    rng = np.random.default_rng(0)
    return _table(rng, 24, 0), _table(rng, 8, 100), _table(rng, 6, 200)


def test_train_model_returns_model_normaliser_and_history(tables):
    train, validation, _ = tables
    normaliser = MinMaxNormaliser.from_plugin_limits().to_dict()
    model, kept, history = train_model(train, validation, normaliser, _training())
    assert isinstance(model, SemanticEQModel)
    assert not model.training
    assert kept == normaliser
    assert history["epoch"].tolist() == [1, 2]  # 1-based: the MLflow step of each epoch
    assert set(HISTORY_METRICS) <= set(history.columns)
    assert "seed" not in history.columns
    assert np.isfinite(history[list(HISTORY_METRICS)].to_numpy()).all()


def test_train_model_is_deterministic(tables):
    train, validation, _ = tables
    normaliser = MinMaxNormaliser.from_plugin_limits().to_dict()
    first = train_model(train, validation, normaliser, _training())
    second = train_model(train, validation, normaliser, _training())
    pd.testing.assert_frame_equal(first[2], second[2])
    for a, b in zip(first[0].state_dict().values(), second[0].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_train_model_rejects_unknown_parameters(tables):
    train, validation, _ = tables
    with pytest.raises(ValueError, match="unknown training parameter"):
        train_model(
            train,
            validation,
            MinMaxNormaliser.from_plugin_limits().to_dict(),
            _training(learning_rat=1),
        )


def test_decoder_normaliser_is_identity_only_for_plugin_units_in_consistent_units():
    zscore = {"kind": "zscore", "columns": PARAMS, "mean": [0.0] * 13, "std": [1.0] * 13}
    assert decoder_normaliser(zscore, "plugin_units", False) == zscore
    assert decoder_normaliser(zscore, "plugin_units", True)["kind"] == "identity"
    assert decoder_normaliser(zscore, "normalised", False) == zscore


def test_history_to_metrics_gives_one_step_per_epoch():
    history = pd.DataFrame({"epoch": [1, 2, 3], **{m: [3.0, 2.0, 1.0] for m in HISTORY_METRICS}})
    metrics = history_to_metrics(history)
    assert set(metrics) == set(HISTORY_METRICS)
    assert metrics["train_loss"] == [
        {"step": 1, "value": 3.0},
        {"step": 2, "value": 2.0},
        {"step": 3, "value": 1.0},
    ]
    with pytest.raises(ValueError, match="lacks the column"):
        history_to_metrics(history.drop(columns="learning_rate"))


def test_embed_settings_covers_every_row_in_eval_mode(tables):
    model = SemanticEQModel("normalised", seed=0).train()
    embeddings = embed_settings(model, tables)
    assert len(embeddings) == sum(len(t) for t in tables)
    assert embeddings["split"].value_counts().to_dict() == {"train": 24, "validation": 8, "test": 6}
    latent = embeddings.filter(like="latent_").to_numpy()
    assert latent.shape[1] == 32
    assert np.abs(latent).max() <= 1.0  # tanh
    again = embed_settings(model, tables)  # no dropout: deterministic
    np.testing.assert_array_equal(latent, again.filter(like="latent_").to_numpy())
