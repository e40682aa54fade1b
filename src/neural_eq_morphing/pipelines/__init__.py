"""The project's pipelines, discovered by ``find_pipelines``.

``data_processing``, ``training`` and ``evaluation`` hold one namespace per design
(:mod:`neural_eq_morphing.pipelines.designs`); the registry adds one chain per design.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from kedro.pipeline import Pipeline

from neural_eq_morphing.pipelines.designs import design_names

#: Datasets every design reads without its namespace prefix.
SHARED_INPUTS = frozenset({"settings_filtered", "split_assignment"})


def stage(template: Pipeline, name: str) -> Pipeline:
    """Group a template's nodes under the stage namespace ``name``, datasets unprefixed.

    Wrapped once more in a design namespace, the nodes become ``<design>.<name>.<node>``
    (``log2.train.train_model``) while datasets get the design prefix only
    (``log2.model``), so kedro-viz shows each design as normalise → train → evaluate.
    """
    return Pipeline(template, namespace=name, prefix_datasets_with_namespace=False)


def per_design(
    template: Pipeline,
    designs: Sequence[str] | None,
    *,
    parameters: Callable[[str], Mapping[str, str]],
    tags: str,
) -> Pipeline:
    """One namespaced copy of ``template`` per design.

    Args:
        template: The stage's template pipeline.
        designs: The design names; ``None`` reads them from ``parameters_designs.yml``
            (the registry reads them once and passes them to every stage).
        parameters: Maps a design name to the template's parameter remapping.
        tags: Tag of every node.
    """
    used = SHARED_INPUTS & template.inputs()
    return sum(
        (
            Pipeline(
                template,
                namespace=design,
                inputs=set(used),
                parameters=dict(parameters(design)),
                tags=tags,
            )
            for design in (design_names() if designs is None else designs)
        ),
        Pipeline([]),
    )
