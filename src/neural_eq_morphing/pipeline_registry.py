"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

from neural_eq_morphing.pipelines.designs import design_names

#: The design chain that ``kedro run`` (``__default__``) runs.
DEFAULT_PIPELINE = "log2"


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``find_pipelines`` discovers every package under ``pipelines/``: the stages
    (``data_processing``, ``training`` and ``evaluation``, each with one namespace per
    design) and ``compare`` / ``publish_results``. Each design of
    ``parameters_designs.yml`` then gets its chain, named after it (``log1``, ``log2``, …):
    the shared data processing plus that design's normalise → train → evaluate.
    ``__default__`` is the ``log2`` chain.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    stages = pipelines["data_processing"] + pipelines["training"] + pipelines["evaluation"]
    shared = stages.only_nodes_with_namespaces(["data_processing"])
    for design in design_names():
        if design in pipelines:
            raise ValueError(f"design {design!r} has the name of a pipeline; rename the design")
        pipelines[design] = shared + stages.only_nodes_with_namespaces([design])
    if DEFAULT_PIPELINE in pipelines:
        pipelines["__default__"] = pipelines[DEFAULT_PIPELINE]
    return pipelines
