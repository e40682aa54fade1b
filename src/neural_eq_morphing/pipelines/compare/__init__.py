"""``kedro run --pipelines compare``: Log 1 vs Log 2 and the ablation over seeds, and the report."""

from neural_eq_morphing.pipelines.compare.pipeline import create_pipeline

__all__ = ["create_pipeline"]
