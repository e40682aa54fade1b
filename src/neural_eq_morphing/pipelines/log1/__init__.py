"""``kedro run --pipelines log1``: data processing, training and evaluation of Log 1."""

from kedro.pipeline import Pipeline

from neural_eq_morphing.pipelines.variant_chain import create_variant_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Create the log1 chain."""
    return create_variant_pipeline("log1")
