"""The ``data_processing`` pipeline: fetch → ingest → validate → filter → split → normalise."""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node

from neural_eq_morphing.pipelines import per_design, stage
from neural_eq_morphing.pipelines.data_processing.nodes import (
    check_rejected_share,
    describe_raw_file,
    filter_terms,
    fit_normaliser,
    ingest_safe_db,
    normalise_splits,
    split_by_contributor,
    validate_settings,
)


def create_normalisation_pipeline() -> Pipeline:
    """Template: fit a feature normaliser, write the normalised train/validation/test tables."""
    return Pipeline(
        [
            node(
                fit_normaliser,
                inputs=["settings_filtered", "split_assignment", "params:feature_normaliser"],
                outputs="feature_normaliser",
                name="fit_normaliser",
            ),
            node(
                normalise_splits,
                inputs=["settings_filtered", "split_assignment", "feature_normaliser"],
                outputs=["model_input_train", "model_input_validation", "model_input_test"],
                name="normalise_splits",
            ),
        ]
    )


def create_shared_pipeline() -> Pipeline:
    """Fetch → ingest → validate → filter → split: the nodes every design shares.

    They sit in the ``data_processing`` namespace (one box in kedro-viz) without prefixing
    their datasets, which keep their catalog names (``settings_filtered``, …).
    """
    return Pipeline(
        [
            node(
                describe_raw_file,
                inputs=["safe_db_raw", "params:safe_db", "params:raw_file"],
                outputs="raw_data_provenance",
                name="describe_raw_file",
            ),
            node(
                ingest_safe_db,
                inputs=["safe_db_raw", "params:terms"],
                outputs="settings_ingested",
                name="ingest_safe_db",
            ),
            node(
                validate_settings,
                inputs=["settings_ingested", "params:validation"],
                outputs=["settings_valid", "settings_quarantine", "validation_report"],
                name="validate_settings",
            ),
            node(
                check_rejected_share,
                inputs=["settings_valid", "settings_quarantine", "validation_report"],
                outputs="settings_validated",
                name="check_rejected_share",
            ),
            node(
                filter_terms,
                inputs=["settings_validated", "params:terms"],
                outputs=["settings_filtered", "term_summary"],
                name="filter_terms",
            ),
            node(
                split_by_contributor,
                inputs=["settings_filtered", "params:split"],
                outputs=["split_assignment", "split_summary"],
                name="split_by_contributor",
            ),
        ],
        namespace="data_processing",
        prefix_datasets_with_namespace=False,
        tags="data_processing",
    )


def create_pipeline(designs: Sequence[str] | None = None, **kwargs) -> Pipeline:
    """Create the ``data_processing`` pipeline with one normalisation namespace per design.

    A design's normalisation nodes live in ``<design>.normalise``; their datasets carry
    the design's prefix only (``log2.feature_normaliser``, ``log2.model_input_train``, …).
    """
    return create_shared_pipeline() + per_design(
        stage(create_normalisation_pipeline(), "normalise"),
        designs,
        parameters=lambda design: {
            "params:feature_normaliser": f"params:designs.{design}.feature_normaliser"
        },
        tags="data_processing",
    )
