"""The ``training`` modular pipeline, instantiated once per variant namespace."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from neural_eq_morphing.pipelines import VARIANTS, stage
from neural_eq_morphing.pipelines.training.nodes import (
    embed_settings,
    history_to_metrics,
    train_model,
)


def create_training_pipeline() -> Pipeline:
    """Template: train one variant, record its history and embed every filtered row."""
    return Pipeline(
        [
            node(
                train_model,
                inputs=[
                    "model_input_train",
                    "model_input_validation",
                    "normaliser",
                    "params:training",
                ],
                outputs=["model", "mlflow_model", "model_normaliser", "training_history"],
                name="train_model",
            ),
            node(
                history_to_metrics,
                inputs="training_history",
                outputs="training_metrics",
                name="log_training_metrics",
            ),
            node(
                embed_settings,
                inputs=["model", "model_input_train", "model_input_validation", "model_input_test"],
                outputs="latent_embeddings",
                name="embed_settings",
            ),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    """Create the ``training`` pipeline: one namespaced copy of the template per variant."""
    template = stage(create_training_pipeline(), "train")
    return sum(
        (Pipeline(template, namespace=variant, tags="training") for variant in VARIANTS),
        Pipeline([]),
    )
