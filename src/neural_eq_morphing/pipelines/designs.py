"""Designs and compare configurations, read from ``parameters_designs.yml`` (docs/design.md §5).

A *design* is the recipe of a model (``log1``, ``log2``, …): one block under ``designs:``
with its ``label``, ``feature_normaliser``, ``strict_ranges`` and ``training``. Each design
is also a namespace: its nodes are ``<design>.normalise.*``, ``<design>.train.*``,
``<design>.evaluate.*`` and its datasets ``<design>.model``, … . A *compare
configuration* is a design plus changes.

Pipelines are built before parameters reach any node, so the registry reads the design
names from the configuration itself (:func:`design_names`), the way Kedro's documentation
builds dynamic pipelines: with the project's own config loader, in its default run
environment (``base`` + ``local``). Runtime ``--params`` cannot add a design.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.framework.project import settings
from kedro.utils import find_kedro_project

#: The keys a design block must have.
DESIGN_KEYS = ("label", "feature_normaliser", "strict_ranges", "training")
#: The keys a compare configuration may have (``design`` is required).
CONFIGURATION_KEYS = ("design", "label", "feature_normaliser", "training")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{what} name {name!r} is not usable as a namespace; expected lower-case letters, "
            "digits and underscores, starting with a letter (e.g. log2_latent16)"
        )
    return name


def check_designs(designs: Any) -> dict[str, Mapping[str, Any]]:
    """Validate the ``designs`` parameter block and return it as a dict.

    Raises:
        ValueError: When it is not a non-empty mapping of valid names to blocks with
            every key of :data:`DESIGN_KEYS` (and no other).
    """
    if not isinstance(designs, Mapping) or not designs:
        raise ValueError(
            "the parameters need a non-empty 'designs' block (conf/base/parameters_designs.yml)"
        )
    for name, block in designs.items():
        _check_name(name, "design")
        if not isinstance(block, Mapping):
            raise ValueError(f"designs.{name} must be a mapping with keys {list(DESIGN_KEYS)}")
        missing = [key for key in DESIGN_KEYS if key not in block]
        unknown = sorted(set(block) - set(DESIGN_KEYS))
        if missing or unknown:
            raise ValueError(
                f"designs.{name}: missing {missing}, unknown {unknown}; "
                f"a design has exactly the keys {list(DESIGN_KEYS)}"
            )
    return dict(designs)


#: The key by which a design block starts from another design.
EXTENDS = "extends"


def resolve_extends(designs: Mapping[str, Any]) -> dict[str, Any]:
    """Every design block complete: one that says ``extends: <design>`` starts from it.

    A block with ``extends`` lists only what it changes: its keys are merged over the
    design it extends (that one resolved first; mappings such as ``training`` and
    ``feature_normaliser`` merge key by key, any other value, a list included, replaces).
    It must give its own ``label``. The result has no ``extends`` keys; blocks without
    one are returned as they are.

    Raises:
        ValueError: When a block extends an unknown design, itself through a cycle, or
            has no label of its own.
    """
    if not isinstance(designs, Mapping):
        return designs  # type: ignore[return-value]
    resolved: dict[str, Any] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Any:
        if name in resolved:
            return resolved[name]
        block = designs[name]
        if not isinstance(block, Mapping) or EXTENDS not in block:
            resolved[name] = block
            return block
        parent = block[EXTENDS]
        if parent not in designs:
            raise ValueError(
                f"designs.{name}.extends names unknown design {parent!r}; known: {list(designs)}"
            )
        if parent in (*chain, name):
            raise ValueError(
                f"designs.{name}.extends makes a cycle: {' -> '.join((*chain, name, parent))}"
            )
        if "label" not in block:
            raise ValueError(
                f"designs.{name} extends {parent!r} and needs a label of its own (label: ...)"
            )
        changes = {key: value for key, value in block.items() if key != EXTENDS}
        resolved[name] = _merged(resolve(parent, (*chain, name)), changes)
        return resolved[name]

    for name in designs:
        resolve(name, ())
    return {name: resolved[name] for name in designs}


def _merged(base: Any, changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` over ``base``, mappings key by key, any other value replacing."""
    out = dict(base) if isinstance(base, Mapping) else {}
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def design_names(project_path: str | Path | None = None) -> list[str]:
    """The designs declared in the project's parameters, in file order.

    Args:
        project_path: The project root; default: the Kedro project around the working
            directory.
    """
    root = Path(project_path) if project_path else find_kedro_project(Path.cwd())
    if root is None:
        raise RuntimeError(
            f"no Kedro project around {Path.cwd()}; run from the project or pass project_path"
        )
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(Path(root) / settings.CONF_SOURCE), **settings.CONFIG_LOADER_ARGS
    )
    return list(check_designs(loader["parameters"].get("designs")))


def resolve_configurations(
    designs: Mapping[str, Any], compare: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every compare configuration, resolved from the design it starts from.

    The designs listed in ``compare.designs`` (all of them when null; a string of names
    separated by spaces, as ``--params "compare.designs=log1 log2"`` gives, works too)
    come first, each as
    a configuration of its own name with no changes; then ``compare.configurations``, each
    naming its ``design`` and what it changes (``label``, and ``feature_normaliser`` and
    ``training`` keys merged over the design's).

    Returns:
        ``{name: {"design", "label", "feature_normaliser", "training", "changes"}}`` in
        report order; ``training`` excludes the design's ``seed`` (compare has its own).

    Raises:
        ValueError: On an unknown design or key, or a name used twice.
    """
    designs = check_designs(designs)
    chosen = compare.get("designs") or list(designs)
    if isinstance(chosen, str):  # from --params, where a comma separates parameters
        chosen = chosen.split()
    unknown = [name for name in chosen if name not in designs]
    if unknown:
        raise ValueError(
            f"compare.designs names unknown design(s) {unknown}; known: {list(designs)}"
        )
    specs: dict[str, Mapping[str, Any]] = {name: {"design": name} for name in chosen}
    for name, spec in (compare.get("configurations") or {}).items():
        _check_name(name, "compare configuration")
        if name in specs:
            raise ValueError(f"compare.configurations.{name} has the name of a design")
        if not isinstance(spec, Mapping) or spec.get("design") not in designs:
            raise ValueError(
                f"compare.configurations.{name} must name the design it starts from "
                f"(design: one of {list(designs)}), got {spec!r}"
            )
        extra = sorted(set(spec) - set(CONFIGURATION_KEYS))
        if extra:
            raise ValueError(
                f"compare.configurations.{name}: unknown key(s) {extra}; "
                f"expected some of {list(CONFIGURATION_KEYS)}"
            )
        specs[name] = spec
    resolved = {}
    for name, spec in specs.items():
        design = designs[spec["design"]]
        changes = {key: spec[key] for key in spec if key != "design"}
        training = {**design["training"], **(spec.get("training") or {})}
        training.pop("seed", None)
        resolved[name] = {
            "design": spec["design"],
            "label": spec.get("label", design["label"]),
            "feature_normaliser": {
                **design["feature_normaliser"],
                **(spec.get("feature_normaliser") or {}),
            },
            "training": training,
            "changes": changes,
        }
    return resolved


def compare_seeds(compare: Mapping[str, Any]) -> list[int]:
    """The seeds of the comparison: ``first_seed``, ``first_seed + 1``, … (``n_seeds``)."""
    n_seeds = int(compare["n_seeds"])
    if n_seeds < 1:
        raise ValueError(f"compare.n_seeds must be at least 1, got {n_seeds}")
    return [int(compare["first_seed"]) + k for k in range(n_seeds)]
