"""Kedro project settings."""

from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.utils import find_kedro_project
from omegaconf.resolvers import oc


def sqlite_in_project(filename: str) -> str:
    """``sqlite:///<project root>/<filename>``, wherever in the project Kedro is started.

    A bare ``sqlite:///mlflow.db`` is relative to the working directory, so a notebook
    started in ``notebooks/`` would open a second, empty store there.
    """
    root = find_kedro_project(Path.cwd()) or Path.cwd()
    return f"sqlite:///{(root / filename).resolve()}"


CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # ${oc.env:VAR,default} in any config file, e.g. MLFLOW_TRACKING_URI in mlflow.yml;
    # ${sqlite_in_project:mlflow.db} for the project's own MLflow store.
    "custom_resolvers": {"oc.env": oc.env, "sqlite_in_project": sqlite_in_project},
}

# Provenance tags (git commit, SAFE-DB checksum, design, seed) on each MLflow run; the
# run itself is opened by kedro-mlflow's own hook.
from neural_eq_morphing.hooks import ParameterCheckHook, ProvenanceTagsHook  # noqa: E402

HOOKS = (ParameterCheckHook(), ProvenanceTagsHook())
