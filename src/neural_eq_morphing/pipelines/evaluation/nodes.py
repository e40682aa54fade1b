"""Nodes of the ``evaluation`` pipeline (docs/design.md section 6).

The measuring is :func:`neural_eq_morphing.models.evaluation.evaluate_model`, the same
function compare calls; these nodes only pass it the catalog's datasets and hand its
results to the catalog (JSON, CSV, MLflow metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from neural_eq_morphing.models.evaluation import evaluate_model, out_of_range_sets
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.serving import SemanticEQ

logger = logging.getLogger(__name__)

#: Prefix of the scalar evaluation metrics in MLflow (``<design>.eval.<metric>``).
MLFLOW_PREFIX = "eval"


def evaluate(
    model: SemanticEQModel,
    feature_normaliser: Mapping[str, Any],
    decoder_normaliser: Mapping[str, Any],
    train_table: pd.DataFrame,
    validation_table: pd.DataFrame,
    test_table: pd.DataFrame,
    settings_filtered: pd.DataFrame,
    training_history: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Measure the trained model (see :func:`~neural_eq_morphing.models.evaluation.evaluate_model`).

    Returns:
        The metrics document (``metrics`` and their details), the latent embeddings, the
        term centroids, the generated presets and the morph table.
    """
    result = evaluate_model(
        model,
        feature_normaliser,
        decoder_normaliser,
        (train_table, validation_table, test_table),
        settings_filtered,
        training_history,
        evaluation,
    )
    metrics = result.metrics
    logger.info(
        "Evaluated: valid share %.1f%% (random latents), held-out silhouette %.3f "
        "(raw parameters %.3f), reconstruction %.2f dB RMS, generation %.2f dB RMS",
        100 * metrics["valid_share.random_latents"],
        metrics["silhouette.held_out.latent"],
        metrics["silhouette.held_out.baseline"],
        metrics["reconstruction_rms_db.mean"],
        metrics["generation_rms_db"],
    )
    return (
        result.document(),
        result.latent_embeddings,
        result.term_centroids,
        result.generated_presets,
        result.morph_table,
    )


def metrics_for_mlflow(evaluation_metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The scalar metrics as MLflow metrics ``eval.<metric>`` (step 0); undefined ones skipped."""
    return {
        f"{MLFLOW_PREFIX}.{name}": {"value": float(value), "step": 0}
        for name, value in evaluation_metrics["metrics"].items()
        if value is not None and np.isfinite(value)
    }


def check_ranges(evaluation_metrics: Mapping[str, Any], strict_ranges: bool) -> None:
    """Fail when the design must stay inside the plug-in limits and a decoded setting does not.

    Runs after the metrics are written, so a failing run can still be inspected.

    Raises:
        ValueError: When ``strict_ranges`` is on and any set has an out-of-range setting.
    """
    failing = out_of_range_sets(evaluation_metrics)
    if failing and strict_ranges:
        raise ValueError(
            "decoded settings fall outside the plug-in limits, which this design must "
            f"never produce (designs.<design>.strict_ranges): {failing}"
        )
    if failing:
        logger.warning("Out-of-range decoded settings (reported, not fatal): %s", failing)


def package_semantic_eq(
    model: SemanticEQModel,
    feature_normaliser: Mapping[str, Any],
    decoder_normaliser: Mapping[str, Any],
    term_centroids: pd.DataFrame,
) -> SemanticEQ:
    """Bundle the trained model, its normalisers and its term centroids: words -> EQ.

    The bundle is what ``kedro run`` logs and registers in MLflow
    (``<design>_semantic_eq``, alias ``current``) and what the command line and the web
    app use (:class:`~neural_eq_morphing.serving.SemanticEQ`).
    """
    return SemanticEQ(model, dict(feature_normaliser), dict(decoder_normaliser), term_centroids)
