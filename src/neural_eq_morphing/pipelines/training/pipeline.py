"""The ``training`` modular pipeline, instantiated once per design namespace."""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from neural_eq_morphing.pipelines import per_design, stage
from neural_eq_morphing.pipelines.training.nodes import history_to_metrics, train_model


def create_training_pipeline() -> Pipeline:
    """Template: train one design's model and record its per-epoch history."""
    return Pipeline(
        [
            node(
                train_model,
                inputs=[
                    "model_input_train",
                    "model_input_validation",
                    "feature_normaliser",
                    "params:training",
                ],
                outputs=["model", "decoder_normaliser", "training_history"],
                name="train_model",
            ),
            node(
                history_to_metrics,
                inputs="training_history",
                outputs="training_metrics",
                name="log_training_metrics",
            ),
        ]
    )


def create_pipeline(designs: Sequence[str] | None = None, **kwargs) -> Pipeline:
    """Create the ``training`` pipeline: one namespaced copy of the template per design."""
    return per_design(
        stage(create_training_pipeline(), "train"),
        designs,
        parameters=lambda design: {"params:training": f"params:designs.{design}.training"},
        tags="training",
    )
