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
