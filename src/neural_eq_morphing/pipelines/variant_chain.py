"""One variant's whole chain: shared data processing, then that variant's namespaced nodes."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from neural_eq_morphing.pipelines import data_processing, evaluation, training


def create_variant_pipeline(variant: str) -> Pipeline:
    """Data processing (shared nodes) plus every node in the ``variant`` namespace."""
    everything = (
        data_processing.create_pipeline()
        + training.create_pipeline()
        + evaluation.create_pipeline()
    )
    return data_processing.create_shared_pipeline() + everything.only_nodes_with_namespaces(
        [variant]
    )
