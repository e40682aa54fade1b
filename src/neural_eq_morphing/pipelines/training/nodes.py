"""Nodes of the ``training`` pipeline: normalised splits to a trained model and its history."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd

from neural_eq_morphing.models.config import TrainingConfig
from neural_eq_morphing.models.data import decoder_normaliser, train_on_tables
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.models.progress import default_progress
from neural_eq_morphing.models.training import HISTORY_COLUMNS

logger = logging.getLogger(__name__)

#: Columns of the history that become MLflow metric histories (one step per epoch).
HISTORY_METRICS = tuple(c for c in HISTORY_COLUMNS if c not in ("seed", "epoch"))


def train_model(
    train_table: pd.DataFrame,
    validation_table: pd.DataFrame,
    feature_normaliser: Mapping[str, Any],
    training: Mapping[str, Any],
) -> tuple[SemanticEQModel, dict[str, Any], pd.DataFrame]:
    """Train one model of a design on the training split, validating on the validation split.

    Args:
        train_table: Normalised training split (``term`` and the 13 features).
        validation_table: Normalised validation split.
        feature_normaliser: The design's feature normaliser (a z-score's mean and std enter
            the loss of a ``plugin_units`` head trained in consistent units).
        training: The design's ``training`` parameters (``parameters_designs.yml``).

    Returns:
        The trained model (eval mode), its decoder normaliser (whose inverse maps the
        decoder output to plug-in units; logged beside the model), and the per-epoch
        history.
    """
    if train_table.empty or validation_table.empty:
        raise ValueError("training needs non-empty train and validation splits")
    values = dict(training)
    if "seed" not in values:
        raise ValueError(
            "the training parameters need a 'seed' (e.g. designs.log2.training.seed: 42)"
        )
    seed = int(values.pop("seed"))
    config = TrainingConfig.from_dict(values)
    logger.info(
        "Training (seed %d): %d epochs, batch %d, %d training and %d validation rows",
        seed,
        config.epochs,
        config.batch_size,
        len(train_table),
        len(validation_table),
    )
    result = train_on_tables(
        config,
        train_table,
        validation_table,
        feature_normaliser,
        [seed],
        progress=default_progress("train"),
    )
    model = result.models[0].eval()
    history = result.history.drop(columns="seed").reset_index(drop=True)
    last = history.iloc[-1]
    logger.info(
        "Trained: final train loss %.4g (reconstruction %.4g, contrastive %.4g), "
        "validation loss %.4g",
        last["train_loss"],
        last["train_reconstruction"],
        last["train_contrastive"],
        last["val_loss"],
    )
    output_space = decoder_normaliser(
        feature_normaliser, config.decoder_head, config.recon_in_consistent_units
    )
    return model, output_space, history


def history_to_metrics(history: pd.DataFrame) -> dict[str, list[dict[str, float]]]:
    """Turn the per-epoch history into MLflow metric histories (step = epoch).

    Args:
        history: Output of :func:`train_model`.

    Returns:
        ``{metric: [{"step": epoch, "value": value}, ...]}`` for kedro-mlflow.
    """
    missing = [column for column in HISTORY_METRICS if column not in history]
    if missing:
        raise ValueError(f"the training history lacks the column(s) {missing}")
    return {
        column: [
            {"step": int(epoch), "value": float(value)}
            for epoch, value in zip(history["epoch"], history[column], strict=True)
        ]
        for column in HISTORY_METRICS
    }
