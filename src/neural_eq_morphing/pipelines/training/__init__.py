"""Train a semantic-EQ model per design namespace (log1, log2, …), tracked in MLflow."""

from neural_eq_morphing.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
