"""``kedro run --pipelines log2``: data processing, training and evaluation of Log 2."""

from kedro.pipeline import Pipeline

from neural_eq_morphing.pipelines.variant_chain import create_variant_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    """Create the log2 chain."""
    return create_variant_pipeline("log2")
