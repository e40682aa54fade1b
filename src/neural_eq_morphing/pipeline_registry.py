"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: Model variants with a full chain (data processing, training) of their own.
VARIANTS = ("log1", "log2")
#: The variant that ``kedro run`` (``__default__``) trains.
DEFAULT_VARIANT = "log2"


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``find_pipelines`` discovers every package under ``pipelines/`` (``data_processing``,
    ``training`` with both variants, …). On top of those, one pipeline per variant
    (``log1``, ``log2``) runs the shared data processing plus that variant's namespaced
    nodes, and ``__default__`` is the ``log2`` chain.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    everything = sum(pipelines.values(), Pipeline([]))
    shared = Pipeline([n for n in everything.nodes if n.namespace is None])
    for variant in VARIANTS:
        pipelines[variant] = shared + everything.only_nodes_with_namespaces([variant])
    pipelines["__default__"] = pipelines[DEFAULT_VARIANT]
    return pipelines
