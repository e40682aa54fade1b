"""Kedro project settings."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # ${oc.env:VAR,default} in any config file, e.g. MLFLOW_TRACKING_URI in mlflow.yml.
    "custom_resolvers": {"oc.env": oc.env},
}

# Provenance tags (git commit, SAFE-DB checksum, variant, seed) on each MLflow run; the
# run itself is opened by kedro-mlflow's own hook.
from neural_eq_morphing.hooks import ProvenanceTagsHook  # noqa: E402

HOOKS = (ProvenanceTagsHook(),)
