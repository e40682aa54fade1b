"""Project pipelines."""

from __future__ import annotations

import importlib
import pkgutil

from kedro.pipeline import Pipeline

from neural_eq_morphing import pipelines as pipeline_packages
from neural_eq_morphing.pipelines import data_processing
from neural_eq_morphing.pipelines.designs import design_names

#: The design chain that ``kedro run`` (``__default__``) runs.
DEFAULT_PIPELINE = "log2"


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Every package under ``pipelines/`` with a ``create_pipeline`` is a pipeline: the
    stages (``data_processing``, ``training`` and ``evaluation``, each with one namespace
    per design), ``compare`` and ``publish_results``. Each design of
    ``parameters_designs.yml`` then gets its chain, named after it (``log1``, ``log2``, …):
    the shared data processing plus that design's normalise → train → evaluate.
    ``__default__`` is the ``log2`` chain.

    Kedro's ``find_pipelines`` is not used: under ``kedro run --pipelines log1`` it loads
    only packages of that name (Kedro 1.7), and a design is not a package.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    designs = design_names()  # read once, handed to every stage
    pipelines = {
        module.name: importlib.import_module(
            f"{pipeline_packages.__name__}.{module.name}"
        ).create_pipeline(designs=designs)
        for module in pkgutil.iter_modules(pipeline_packages.__path__)
        if module.ispkg
    }
    stages = pipelines["data_processing"] + pipelines["training"] + pipelines["evaluation"]
    shared = data_processing.create_shared_pipeline()
    for design in designs:
        if design in pipelines:
            raise ValueError(f"design {design!r} has the name of a pipeline; rename the design")
        pipelines[design] = shared + stages.only_nodes_with_namespaces([design])
    if DEFAULT_PIPELINE not in pipelines:
        raise ValueError(
            f"kedro run's default design {DEFAULT_PIPELINE!r} is not in parameters_designs.yml"
        )
    pipelines["__default__"] = pipelines[DEFAULT_PIPELINE]
    return pipelines
