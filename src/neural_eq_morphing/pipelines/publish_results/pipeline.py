"""``publish_results``: the newest compare report as ``docs/results.md``."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from neural_eq_morphing.pipelines.publish_results.nodes import publish_results


def create_pipeline(**kwargs) -> Pipeline:
    """One node: the compare report in, the docs page and its figures out."""
    return Pipeline(
        [
            node(
                publish_results,
                ["compare_report_md", "params:publish_results.image_prefix"],
                ["results_doc", "results_figures"],
                name="publish_results",
            )
        ],
        tags="publish_results",
    )
