"""Project hooks: parameters checked up front; provenance tags on each run's MLflow run."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node

from neural_eq_morphing.parameter_schema import check_parameters

logger = logging.getLogger(__name__)

PROVENANCE_DATASET = "raw_data_provenance"


def _git(project_path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=project_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.strip()


def git_commit(project_path: Path) -> str:
    """Return the project's git commit (``-dirty`` when tracked files changed), or ``unknown``."""
    try:
        commit = _git(project_path, "rev-parse", "HEAD")
        changes = _git(project_path, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if changes else commit


def forget_previous_session_run() -> None:
    """Clear the run id kedro-mlflow's (process-wide) hook kept from an earlier session.

    kedro-mlflow 2.0 sets that id when a tracked pipeline starts and never clears it, so a
    later session in the same process (a notebook, the tests) whose pipeline has tracking
    disabled (``publish_results``) reopens the old run, from a store it may no longer be
    using. A tracked pipeline sets a fresh id in ``before_pipeline_run`` anyway.
    """
    try:
        from kedro_mlflow.framework.hooks.mlflow_hook import mlflow_hook  # noqa: PLC0415
    except ImportError:  # pragma: no cover - kedro-mlflow is a dependency
        return
    if hasattr(mlflow_hook, "run_id"):
        mlflow_hook.run_id = None


class ParameterCheckHook:
    """Check every parameter against the schema before anything runs.

    A typo (``terms.min_exmaples``), an unknown block or a value of the wrong type stops
    the command when the Kedro context is created, with one line per problem that names
    the parameter (:func:`~neural_eq_morphing.parameter_schema.check_parameters`).
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Validate ``context.params`` (the files, ``conf/local`` and ``--params``)."""
        check_parameters(context.params)


class ProvenanceTagsHook:
    """Tag the active MLflow run with the git commit, SAFE-DB checksum, designs and seeds.

    Tags: ``git_commit``; ``safe_db_sha256`` and ``safe_db_matches_published`` whenever
    ``raw_data_provenance`` is saved or loaded; ``design`` (comma-joined when a run
    trains several) and ``seed`` / ``<design>.seed`` before each training node runs; the
    run is renamed after its designs and seeds (``log2 seed 42``). Compare's nested runs
    are named ``compare · <configuration> seed <seed>``, so the two never read alike.
    """

    def __init__(self) -> None:
        self._commit = "unknown"
        self._designs: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Read the project's git commit once and reset per-run state."""
        self._commit = git_commit(Path(context.project_path))
        self._designs = {}
        forget_previous_session_run()

    @staticmethod
    def _set_tags(tags: dict[str, Any]) -> None:
        if mlflow.active_run() is not None:
            mlflow.set_tags({key: str(value) for key, value in tags.items()})

    def _provenance(self, dataset_name: str, data: Any) -> None:
        if dataset_name == PROVENANCE_DATASET and isinstance(data, dict):
            self._set_tags(
                {
                    "safe_db_sha256": data.get("sha256"),
                    "safe_db_matches_published": data.get("matches_published"),
                    "git_commit": self._commit,
                }
            )

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        """Tag the checksum when the data_processing pipeline writes the provenance."""
        self._provenance(dataset_name, data)

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any, node: Node) -> None:
        """Tag the checksum when a pipeline reads the provenance of earlier processing."""
        self._provenance(dataset_name, data)

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        """Tag design and seed before a training node runs."""
        # Training nodes sit in ``<design>.train``; the design is the outer namespace.
        design = node.namespace.split(".")[0] if node.namespace else None
        config = inputs.get(f"params:designs.{design}.training") if design else None
        if not isinstance(config, dict) or "seed" not in config:
            return
        self._designs[design] = config["seed"]
        tags = {
            "design": ",".join(sorted(self._designs)),
            "git_commit": self._commit,
            f"{design}.seed": config["seed"],
        }
        if len(self._designs) == 1:
            tags["seed"] = config["seed"]
        # The run's display name in the MLflow UI: design and seed rather than "__default__".
        tags["mlflow.runName"] = " + ".join(
            f"{name} seed {seed}" for name, seed in sorted(self._designs.items())
        )
        self._set_tags(tags)
