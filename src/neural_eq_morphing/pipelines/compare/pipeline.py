"""The ``compare`` pipeline: the cross-contributor protocol and its report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from neural_eq_morphing.pipelines import data_processing
from neural_eq_morphing.pipelines.compare.nodes import (
    comparison_metrics,
    configurations_of,
    fit_folds,
    fit_validation_folds,
    judge_comparison,
    make_folds,
    run_baselines,
    run_configurations,
    seed_runs,
    strongest_baselines,
    summarise_comparison,
)
from neural_eq_morphing.pipelines.compare.report import render_report, report_context
from neural_eq_morphing.pipelines.data_processing.nodes import filter_terms, split_by_contributor


def create_pipeline(**kwargs) -> Pipeline:
    """Shared data processing, then folds, baselines, configurations, statistics, report.

    Folds and seeds are trained together inside ``run_configurations`` (one batched
    ensemble per configuration), so the graph keeps its shape whatever their number.
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
                make_folds,
                ["settings_filtered", "params:compare"],
                "fold_table",
                name="make_folds",
            ),
            node(
                fit_folds,
                ["settings_filtered", "fold_table", "params:evaluation"],
                "fold_contexts",
                name="fit_folds",
            ),
            node(
                fit_validation_folds,
                ["fold_contexts", "settings_filtered", "fold_table"],
                "validation_fold_contexts",
                name="fit_validation_folds",
            ),
            node(
                strongest_baselines,
                ["validation_fold_contexts", "params:designs"],
                "compare_strongest_baselines",
                name="choose_strongest_baselines",
            ),
            node(
                run_baselines,
                ["fold_contexts", "params:designs"],
                "compare_baseline_metrics",
                name="run_baselines",
            ),
            node(
                filter_terms,
                ["settings_validated", "params:compare.reproduction.terms"],
                ["reproduction_settings", "reproduction_term_summary"],
                name="reproduction_terms",
            ),
            node(
                split_by_contributor,
                ["reproduction_settings", "params:split"],
                ["reproduction_split", "reproduction_split_summary"],
                name="reproduction_split",
            ),
            node(
                run_configurations,
                [
                    "settings_filtered",
                    "fold_table",
                    "fold_contexts",
                    "reproduction_settings",
                    "reproduction_split",
                    "compare_configurations",
                    "params:evaluation",
                    "params:compare",
                ],
                [
                    "compare_fold_metrics",
                    "compare_reproduction_metrics",
                    "compare_histories",
                    "compare_examples",
                    "compare_timings",
                ],
                name="run_configurations",
            ),
            node(
                seed_runs,
                ["compare_fold_metrics", "compare_configurations"],
                "compare_seed_runs",
                name="log_seed_runs",
            ),
            node(
                summarise_comparison,
                ["compare_fold_metrics", "compare_baseline_metrics", "params:compare"],
                "compare_summary",
                name="summarise_comparison",
            ),
            node(
                judge_comparison,
                [
                    "compare_fold_metrics",
                    "compare_baseline_metrics",
                    "compare_configurations",
                    "params:compare",
                ],
                "compare_verdicts",
                name="judge_comparison",
            ),
            node(
                comparison_metrics,
                [
                    "compare_summary",
                    "compare_verdicts",
                    "compare_fold_metrics",
                    "compare_baseline_metrics",
                    "compare_reproduction_metrics",
                ],
                "compare_mlflow_metrics",
                name="log_comparison_metrics",
            ),
            node(
                report_context,
                [
                    "compare_summary",
                    "compare_verdicts",
                    "compare_fold_metrics",
                    "compare_baseline_metrics",
                    "compare_strongest_baselines",
                    "compare_reproduction_metrics",
                    "fold_table",
                    "settings_filtered",
                    "fold_contexts",
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
