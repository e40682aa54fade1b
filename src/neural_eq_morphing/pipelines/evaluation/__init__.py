"""Evaluate a trained design: ranges, clustering, reconstruction, generation, plots."""

from neural_eq_morphing.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
