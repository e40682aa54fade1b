"""The ``evaluation`` modular pipeline, instantiated once per design namespace."""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from neural_eq_morphing.pipelines import per_design, stage
from neural_eq_morphing.pipelines.evaluation.nodes import (
    check_ranges,
    evaluate,
    metrics_for_mlflow,
    package_semantic_eq,
)
from neural_eq_morphing.pipelines.evaluation.plots import (
    plot_latent_map,
    plot_morph,
    plot_term_curves,
    plot_training_curves,
)


def create_evaluation_pipeline() -> Pipeline:
    """Template: evaluate one trained design, log its metrics and draw its four plots."""
    return Pipeline(
        [
            node(
                evaluate,
                [
                    "model",
                    "feature_normaliser",
                    "decoder_normaliser",
                    "model_input_train",
                    "model_input_validation",
                    "model_input_test",
                    "settings_filtered",
                    "training_history",
                    "params:evaluation",
                ],
                [
                    "evaluation_metrics",
                    "latent_embeddings",
                    "term_centroids",
                    "generated_presets",
                    "morph_table",
                ],
                name="evaluate",
            ),
            node(
                metrics_for_mlflow,
                "evaluation_metrics",
                "evaluation_mlflow_metrics",
                name="log_evaluation_metrics",
            ),
            node(
                package_semantic_eq,
                ["model", "feature_normaliser", "decoder_normaliser", "term_centroids"],
                "mlflow_model",
                name="log_semantic_eq",
            ),
            node(
                check_ranges,
                ["evaluation_metrics", "params:strict_ranges"],
                None,
                name="check_ranges",
            ),
            node(
                plot_term_curves,
                ["generated_presets", "settings_filtered", "params:label", "params:evaluation"],
                "term_curves_plot",
                name="plot_term_curves",
            ),
            node(
                plot_morph,
                ["morph_table", "params:label", "params:evaluation"],
                "morph_plot",
                name="plot_morph",
            ),
            node(
                plot_latent_map,
                ["latent_embeddings", "params:label"],
                "latent_map_plot",
                name="plot_latent_map",
            ),
            node(
                plot_training_curves,
                ["training_history", "params:label"],
                "training_curves_plot",
                name="plot_training_curves",
            ),
        ]
    )


def create_pipeline(designs: Sequence[str] | None = None, **kwargs) -> Pipeline:
    """Create the ``evaluation`` pipeline: one namespaced copy of the template per design."""
    return per_design(
        stage(create_evaluation_pipeline(), "evaluate"),
        designs,
        parameters=lambda design: {
            "params:evaluation": "params:evaluation",
            "params:strict_ranges": f"params:designs.{design}.strict_ranges",
            "params:label": f"params:designs.{design}.label",
        },
        tags="evaluation",
    )
