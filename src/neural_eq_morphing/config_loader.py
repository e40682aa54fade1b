"""The project's config loader: Kedro's ``OmegaConfigLoader``, with designs that extend others.

A design block of ``parameters_designs.yml`` may say ``extends: log2`` and list only what
it changes (:func:`~neural_eq_morphing.pipelines.designs.resolve_extends`). The loader
resolves that when it loads the parameters, so every consumer (the pipelines' namespaced
``params:designs.<design>.*`` inputs, the schema check, kedro-viz, the MLflow parameter
log) sees complete blocks. Runtime ``--params`` are merged afterwards by Kedro, over the
resolved blocks: ``--params designs.log2.training.epochs=3`` changes Log 2 only.
"""

from __future__ import annotations

from typing import Any

from kedro.config import OmegaConfigLoader

from neural_eq_morphing.parameter_schema import ParameterError
from neural_eq_morphing.pipelines.designs import resolve_extends


class ProjectConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` whose ``parameters`` have their designs' ``extends`` resolved."""

    def __getitem__(self, key: str) -> dict[str, Any]:
        """Load ``key``; for ``parameters``, with every design block complete."""
        config = super().__getitem__(key)
        if key == "parameters" and isinstance(config, dict) and "designs" in config:
            try:
                config = {**config, "designs": resolve_extends(config["designs"])}
            except ValueError as error:  # one line, no traceback, as the schema check
                raise ParameterError(str(error)) from None
        return config
