"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: The variant chain that ``kedro run`` (``__default__``) runs.
DEFAULT_PIPELINE = "log2"


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``find_pipelines`` discovers every package under ``pipelines/``: the stages
    (``data_processing``, ``training`` and ``evaluation``, the last two with both variant
    namespaces) and one chain per variant (``log1``, ``log2``: data processing plus that
    variant's training and evaluation). ``__default__`` is the ``log2`` chain.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = find_pipelines(raise_errors=True)
    if DEFAULT_PIPELINE in pipelines:  # Kedro loads only the requested pipelines
        pipelines["__default__"] = pipelines[DEFAULT_PIPELINE]
    return pipelines
