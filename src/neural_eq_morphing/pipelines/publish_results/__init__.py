"""Publish the newest compare report into ``docs/`` (run after the compare pipeline)."""

from neural_eq_morphing.pipelines.publish_results.pipeline import create_pipeline

__all__ = ["create_pipeline"]
