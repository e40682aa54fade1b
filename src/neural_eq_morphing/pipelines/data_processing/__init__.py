"""Raw SAFE-DB file to clean, split, normalised model inputs."""

from neural_eq_morphing.pipelines.data_processing.pipeline import (
    create_pipeline,
    create_shared_pipeline,
)

__all__ = ["create_pipeline", "create_shared_pipeline"]
