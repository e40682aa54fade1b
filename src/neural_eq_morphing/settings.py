"""Kedro project settings."""

from pathlib import Path

from neural_eq_morphing.warning_filters import install as filter_uninformative_warnings

# First, before Kedro, kedro-mlflow or MLflow print their uninformative warnings.
filter_uninformative_warnings()

from kedro.utils import find_kedro_project  # noqa: E402
from omegaconf.resolvers import oc  # noqa: E402

from neural_eq_morphing.config_loader import ProjectConfigLoader  # noqa: E402


def sqlite_in_project(filename: str) -> str:
    """``sqlite:///<project root>/<filename>``, wherever in the project Kedro is started.

    A bare ``sqlite:///mlflow.db`` is relative to the working directory, so a notebook
    started in ``notebooks/`` would open a second, empty store there.
    """
    root = find_kedro_project(Path.cwd()) or Path.cwd()
    return f"sqlite:///{(root / filename).resolve()}"


CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # ${oc.env:VAR,default} in any config file, e.g. MLFLOW_TRACKING_URI in mlflow.yml;
    # ${sqlite_in_project:mlflow.db} for the project's own MLflow store.
    "custom_resolvers": {"oc.env": oc.env, "sqlite_in_project": sqlite_in_project},
}

# Provenance tags (git commit, SAFE-DB checksum, design, seed) on each MLflow run; the
# run itself is opened by kedro-mlflow's own hook.
# The run ledger (data/run_ledger) makes each run read what it wrote, and "the newest"
# version of a dataset always one that a finished run wrote.
# Runs started at once set up the MLflow store one at a time (a new sqlite store migrates).
from neural_eq_morphing.hooks import (  # noqa: E402
    ParameterCheckHook,
    ProvenanceTagsHook,
    RunConsistencyHook,
    TrackingStoreSetupLock,
)

_LEDGER = "data/run_ledger"
_STORE_SETUP = TrackingStoreSetupLock(_LEDGER)
HOOKS = (
    _STORE_SETUP.first,
    ParameterCheckHook(),
    ProvenanceTagsHook(),
    RunConsistencyHook(_LEDGER),
    _STORE_SETUP.last,
)
