"""Nodes of the ``training`` pipeline: normalised splits to a trained model and its latents."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from neural_eq_morphing.eq.normalisers import (
    IdentityNormaliser,
    ZScoreNormaliser,
    normaliser_from_dict,
)
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.models.modules import SemanticEQModel
from neural_eq_morphing.models.progress import default_progress
from neural_eq_morphing.models.training import HISTORY_COLUMNS, TrainingConfig, train

logger = logging.getLogger(__name__)

PARAMS = list(PARAMETER_NAMES)
SPLITS = ("train", "validation", "test")
#: Columns of the history that become MLflow metric histories (one step per epoch).
HISTORY_METRICS = tuple(c for c in HISTORY_COLUMNS if c not in ("seed", "epoch"))


def features_of(table: pd.DataFrame) -> np.ndarray:
    """The 13 feature columns of a model-input table as float32."""
    return table[PARAMS].to_numpy(dtype=np.float32)


def term_codes(*tables: pd.DataFrame) -> list[np.ndarray]:
    """Integer class ids of the tables' terms, over the union of their terms (sorted)."""
    vocabulary = sorted(set().union(*(set(table["term"]) for table in tables)))
    index = {term: code for code, term in enumerate(vocabulary)}
    return [table["term"].map(index).to_numpy(dtype=np.int64) for table in tables]


def train_model(
    train_table: pd.DataFrame,
    validation_table: pd.DataFrame,
    normaliser: Mapping[str, Any],
    training: Mapping[str, Any],
) -> tuple[SemanticEQModel, SemanticEQModel, dict[str, Any], pd.DataFrame]:
    """Train one model of a variant on the training split, validating on the validation split.

    Args:
        train_table: Normalised training split (``term`` and the 13 features).
        validation_table: Normalised validation split.
        normaliser: The variant's normaliser (Log 1's z-score is needed for its loss).
        training: The variant's ``training`` parameters (see ``parameters_training.yml``).

    Returns:
        The trained model (eval mode) twice — for the local versioned file and for the
        MLflow model —, the normaliser that maps its decoder output to plug-in units (see
        :func:`output_normaliser`; logged beside the model), and the per-epoch history.
    """
    if train_table.empty or validation_table.empty:
        raise ValueError("training needs non-empty train and validation splits")
    values = dict(training)
    if "seed" not in values:
        raise ValueError("the training parameters need a 'seed' (e.g. log2.training.seed: 42)")
    seed = int(values.pop("seed"))
    config = TrainingConfig.from_dict(values)
    transform = normaliser_from_dict(normaliser)
    zscore = transform if isinstance(transform, ZScoreNormaliser) else None
    train_labels, validation_labels = term_codes(train_table, validation_table)
    logger.info(
        "Training %s (seed %d): %d epochs, batch %d, %d training and %d validation rows",
        config.variant,
        seed,
        config.epochs,
        config.batch_size,
        len(train_table),
        len(validation_table),
    )
    result = train(
        config,
        features_of(train_table),
        train_labels,
        features_of(validation_table),
        validation_labels,
        seeds=[seed],
        zscore_mean=None if zscore is None else zscore.mean,
        zscore_std=None if zscore is None else zscore.std,
        progress=default_progress(f"train {config.variant}"),
    )
    model = result.models[0].eval()
    history = result.history.drop(columns="seed").reset_index(drop=True)
    last = history.iloc[-1]
    logger.info(
        "Trained %s: final train loss %.4g (reconstruction %.4g, contrastive %.4g), "
        "validation loss %.4g",
        config.variant,
        last["train_loss"],
        last["train_reconstruction"],
        last["train_contrastive"],
        last["val_loss"],
    )
    return model, model, output_normaliser(normaliser, config), history


def output_normaliser(normaliser: Mapping[str, Any], config: TrainingConfig) -> dict[str, Any]:
    """The normaliser whose inverse maps the decoder's output to plug-in units.

    That is the feature normaliser, except for Log 1 trained with its loss in consistent
    units, whose decoder learns to output dB / Hz / Q directly (identity).
    """
    if config.variant == "log1" and config.recon_in_consistent_units:
        return IdentityNormaliser().to_dict()
    return dict(normaliser)


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


def embed_settings(
    model: SemanticEQModel,
    train_table: pd.DataFrame,
    validation_table: pd.DataFrame,
    test_table: pd.DataFrame,
) -> pd.DataFrame:
    """Encode every filtered row into the latent space (eval mode, no dropout).

    Args:
        model: The trained model.
        train_table: Normalised training split.
        validation_table: Normalised validation split.
        test_table: Normalised test split.

    Returns:
        One row per setting: ``entry_id``, ``contributor_id``, ``term``, ``split`` and the
        latent coordinates ``latent_00`` … ``latent_31``.
    """
    tables = [
        table[["entry_id", "contributor_id", "term"]].assign(split=name)
        for table, name in zip((train_table, validation_table, test_table), SPLITS, strict=True)
    ]
    features = np.concatenate([features_of(t) for t in (train_table, validation_table, test_table)])
    model.eval()
    with torch.no_grad():
        latent = model.encode(torch.from_numpy(features)).numpy()
    columns = [f"latent_{i:02d}" for i in range(latent.shape[1])]
    frame = pd.concat(tables, ignore_index=True)
    frame["split"] = frame["split"].astype("string")
    return pd.concat([frame, pd.DataFrame(latent, columns=columns)], axis=1)
