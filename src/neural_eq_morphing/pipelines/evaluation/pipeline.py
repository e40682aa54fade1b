"""The ``evaluation`` modular pipeline, instantiated once per variant namespace."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from neural_eq_morphing.pipelines import VARIANTS, stage
from neural_eq_morphing.pipelines.evaluation.nodes import (
    check_training_health,
    evaluate_clustering,
    evaluate_generation,
    evaluate_ranges,
    evaluate_reconstruction,
    generate_presets,
    morph_table,
    summarise_evaluation,
    term_centroids,
)
from neural_eq_morphing.pipelines.evaluation.plots import (
    plot_latent_map,
    plot_morph,
    plot_term_curves,
    plot_training_curves,
)

#: Shared (not namespaced) inputs of the template.
SHARED_INPUTS = {"settings_filtered", "split_assignment"}


def create_evaluation_pipeline() -> Pipeline:
    """Template: evaluate one trained variant and draw its four plots."""
    splits = ["model_input_train", "model_input_validation", "model_input_test"]
    return Pipeline(
        [
            node(term_centroids, "latent_embeddings", "term_centroids", name="term_centroids"),
            node(
                evaluate_ranges,
                [
                    "model",
                    "model_normaliser",
                    "model_input_test",
                    "term_centroids",
                    "params:evaluation",
                ],
                "range_validity",
                name="evaluate_ranges",
            ),
            node(
                evaluate_clustering,
                ["latent_embeddings", *splits, "params:evaluation"],
                "clustering",
                name="evaluate_clustering",
            ),
            node(
                evaluate_reconstruction,
                [
                    "model",
                    "normaliser",
                    "model_normaliser",
                    "model_input_test",
                    "params:evaluation",
                ],
                "reconstruction",
                name="evaluate_reconstruction",
            ),
            node(
                generate_presets,
                ["model", "model_normaliser", "term_centroids"],
                "generated_presets",
                name="generate_presets",
            ),
            node(
                morph_table,
                ["model", "model_normaliser", "term_centroids", "params:evaluation"],
                "morph_table",
                name="morph_table",
            ),
            node(
                evaluate_generation,
                ["generated_presets", "settings_filtered", "split_assignment", "params:evaluation"],
                "generation",
                name="evaluate_generation",
            ),
            node(
                check_training_health,
                ["training_history", "params:evaluation"],
                "training_health",
                name="check_training_health",
            ),
            node(
                summarise_evaluation,
                [
                    "range_validity",
                    "clustering",
                    "reconstruction",
                    "generation",
                    "training_health",
                    "params:strict_ranges",
                ],
                ["evaluation_metrics", "evaluation_mlflow_metrics"],
                name="summarise_evaluation",
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


def create_pipeline(**kwargs) -> Pipeline:
    """Create the ``evaluation`` pipeline: one namespaced copy of the template per variant."""
    template = stage(create_evaluation_pipeline(), "evaluate")
    return sum(
        (
            Pipeline(
                template,
                namespace=variant,
                inputs=SHARED_INPUTS,
                parameters={
                    "params:evaluation": "params:evaluation",
                    "params:strict_ranges": f"params:evaluation.strict_ranges.{variant}",
                    "params:label": f"params:evaluation.labels.{variant}",
                },
                tags="evaluation",
            )
            for variant in VARIANTS
        ),
        Pipeline([]),
    )
