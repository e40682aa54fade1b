"""The newest trained semantic EQ of this project, for the command line and the web app.

Reads a design's model, normalisers and term centroids through the project's catalog, at
the newest version that a *finished* ``kedro run`` wrote (the run ledger), so it never
pairs a model with another run's normaliser.
"""

from __future__ import annotations

import logging
from pathlib import Path

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.utils import find_kedro_project

from neural_eq_morphing.errors import UserError
from neural_eq_morphing.hooks import newest_finished, versioned_config
from neural_eq_morphing.runs import RunLedger
from neural_eq_morphing.serving import SemanticEQ

LEDGER_FOLDER = "data/run_ledger"
_PARTS = ("model", "feature_normaliser", "decoder_normaliser", "term_centroids")


class NoTrainedModelError(UserError, LookupError):
    """No finished run has trained and evaluated the design (the message says what to run)."""


def _command(design: str) -> str:
    return "`kedro run`" if design == "log2" else f"`kedro run --pipelines {design}`"


def load_semantic_eq(
    design: str = "log2",
    project_path: Path | str | None = None,
    env: str | None = None,
    *,
    quiet: bool = False,
) -> tuple[SemanticEQ, str]:
    """Load the design's newest finished semantic EQ; also the run version it came from.

    Args:
        design: A design of ``parameters_designs.yml`` (``log2`` is ``kedro run``'s).
        project_path: The project root (default: found from the working directory).
        env: The Kedro configuration environment.
        quiet: Keep Kedro's and kedro-mlflow's INFO lines out of the console (for tools).

    Raises:
        NoTrainedModelError: When no finished run wrote all four parts (model,
            normalisers, term centroids) of the design; says which command to run.
    """
    root = Path(project_path) if project_path else find_kedro_project(Path.cwd())
    if root is None:
        raise NoTrainedModelError(
            "not inside the neural_eq_morphing project: run this from the project folder"
        )
    bootstrap_project(root)  # configures logging: quieten after it
    if quiet:
        for name in ("kedro", "kedro_mlflow", "neural_eq_morphing"):
            logging.getLogger(name).setLevel(logging.WARNING)
    with KedroSession.create(project_path=root, env=env) as session:
        catalog = session.load_context().catalog
    ledger = RunLedger(root / LEDGER_FOLDER)
    loaded, versions = {}, set()
    for part in _PARTS:
        name = f"{design}.{part}"
        config = versioned_config(catalog, name)
        found = newest_finished(name, config, ledger) if config else None
        if found is None:
            raise NoTrainedModelError(
                f"no trained {design} model in {root / 'data'}: no finished run has written "
                f"{name}. Run {_command(design)} first (it trains and evaluates {design})."
            )
        dataset, version = found
        loaded[part] = dataset.load()
        versions.add(version)
    semantic_eq = SemanticEQ(
        loaded["model"],
        loaded["feature_normaliser"],
        loaded["decoder_normaliser"],
        loaded["term_centroids"],
    )
    return semantic_eq, max(versions)
