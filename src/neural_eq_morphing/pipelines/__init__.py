"""The project's pipelines, discovered by ``find_pipelines``."""

from __future__ import annotations

from kedro.pipeline import Pipeline

#: Model variants; each is a namespace in data_processing, training and evaluation, with
#: its own blocks in the parameters (``normalisers.<v>``, ``<v>.training``, …).
VARIANTS = ("log1", "log2")


def stage(template: Pipeline, name: str) -> Pipeline:
    """Group a template's nodes under the stage namespace ``name``, datasets unprefixed.

    Wrapped once more in a variant namespace, the nodes become ``<variant>.<name>.<node>``
    (``log2.train.train_model``) while datasets get the variant prefix only
    (``log2.model``), so kedro-viz shows each variant as normalise → train → evaluate.
    """
    return Pipeline(template, namespace=name, prefix_datasets_with_namespace=False)
