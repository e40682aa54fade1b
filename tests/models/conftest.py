"""Helpers of the model tests: training configurations read from the designs' YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DESIGNS_FILE = Path(__file__).resolve().parents[2] / "conf" / "base" / "parameters_designs.yml"


def designs() -> dict[str, Any]:
    """The ``designs`` block of ``conf/base/parameters_designs.yml``."""
    return yaml.safe_load(DESIGNS_FILE.read_text(encoding="utf-8"))["designs"]


def design_training(name: str, **overrides: Any) -> dict[str, Any]:
    """A design's ``training`` block less ``seed`` (what the Kedro node passes), updated.

    Args:
        name: The design, e.g. ``"log2"``.
        **overrides: Values that replace (or add to) the block's.

    Returns:
        A plain dict for :meth:`~neural_eq_morphing.models.TrainingConfig.from_dict`.
    """
    values = dict(designs()[name]["training"])
    values.pop("seed", None)
    values.update(overrides)
    return values


def design_with_head(decoder_head: str) -> str:
    """The first design (in file order) whose decoder head is ``decoder_head``."""
    for name, design in designs().items():
        if design["training"]["decoder_head"] == decoder_head:
            return name
    raise LookupError(f"no design in {DESIGNS_FILE.name} uses decoder_head {decoder_head!r}")
