"""The ``compare`` pipeline: data processing, every configuration over seeds, the report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from neural_eq_morphing.pipelines import data_processing
from neural_eq_morphing.pipelines.compare.nodes import (
    build_report,
    run_configurations,
    summarise_comparison,
    summary_metrics,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Shared data processing, then train, evaluate, summarise and report.

    Seeds are trained together inside ``run_configurations`` (one batched ensemble per
    configuration), so the graph stays five nodes long whatever the number of seeds.
    """
    comparison = Pipeline(
        [
            node(
                run_configurations,
                [
                    "settings_filtered",
                    "split_assignment",
                    "params:log1.training",
                    "params:log2.training",
                    "params:evaluation",
                    "params:compare",
                ],
                [
                    "compare_seed_metrics",
                    "compare_seed_runs",
                    "compare_histories",
                    "compare_examples",
                    "compare_timings",
                ],
                name="run_configurations",
            ),
            node(
                summarise_comparison,
                "compare_seed_metrics",
                "compare_summary",
                name="summarise_comparison",
            ),
            node(
                summary_metrics,
                "compare_summary",
                "compare_mlflow_metrics",
                name="log_summary_metrics",
            ),
            node(
                build_report,
                [
                    "compare_summary",
                    "compare_seed_metrics",
                    "compare_examples",
                    "compare_seed_runs",
                    "raw_data_provenance",
                    "params:compare",
                    "params:evaluation",
                ],
                ["compare_report_md", "compare_report_html"],
                name="build_report",
            ),
        ],
        namespace="compare",
        prefix_datasets_with_namespace=False,
        tags="compare",
    )
    return data_processing.create_shared_pipeline() + comparison
