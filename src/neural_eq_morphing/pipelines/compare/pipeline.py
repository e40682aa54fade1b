"""The ``compare`` pipeline: data processing, every configuration over seeds, the report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from neural_eq_morphing.pipelines import data_processing
from neural_eq_morphing.pipelines.compare.nodes import (
    configurations_of,
    run_configurations,
    seed_runs,
    summarise_comparison,
    summary_metrics,
)
from neural_eq_morphing.pipelines.compare.report import render_report, report_context


def create_pipeline(**kwargs) -> Pipeline:
    """Shared data processing, then resolve, train and evaluate, summarise and report.

    Seeds are trained together inside ``run_configurations`` (one batched ensemble per
    configuration), so the graph keeps its shape whatever the number of seeds.
    """
    comparison = Pipeline(
        [
            node(
                configurations_of,
                ["params:designs", "params:compare"],
                "compare_configurations",
                name="resolve_configurations",
            ),
            node(
                run_configurations,
                [
                    "settings_filtered",
                    "split_assignment",
                    "compare_configurations",
                    "params:evaluation",
                    "params:compare",
                ],
                [
                    "compare_seed_metrics",
                    "compare_histories",
                    "compare_examples",
                    "compare_timings",
                ],
                name="run_configurations",
            ),
            node(
                seed_runs,
                ["compare_seed_metrics", "compare_configurations"],
                "compare_seed_runs",
                name="log_seed_runs",
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
                report_context,
                [
                    "compare_summary",
                    "compare_seed_metrics",
                    "compare_examples",
                    "compare_seed_runs",
                    "raw_data_provenance",
                    "compare_configurations",
                    "params:compare",
                    "params:evaluation",
                ],
                "compare_report_context",
                name="report_context",
            ),
            node(
                render_report,
                "compare_report_context",
                ["compare_report_md", "compare_report_html"],
                name="render_report",
            ),
        ],
        namespace="compare",
        prefix_datasets_with_namespace=False,
        tags="compare",
    )
    return data_processing.create_shared_pipeline() + comparison
