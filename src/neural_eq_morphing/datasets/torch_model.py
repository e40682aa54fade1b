"""Catalog datasets for trained :class:`~neural_eq_morphing.models.SemanticEQModel` modules.

* :class:`TorchModelDataset` — a versioned local file with the weights and the config
  needed to rebuild the module (``torch.save`` of plain tensors; loaded with
  ``weights_only=True``, so loading never runs pickled code). Works around: kedro-datasets
  9.x has no torch dataset, and its ``pickle.PickleDataset`` would run pickled code on load.
* :class:`MlflowSemanticEQDataset` — kedro-mlflow's ``MlflowModelTrackingDataset`` for a
  ``pyfunc`` loader-module model (:mod:`neural_eq_morphing.serving`): the weights file and
  the normalisers, no pickle. Works around: kedro-mlflow 2.0 hands the saved object to
  ``log_model`` as the loader module itself and cannot write the data folder it needs;
  ``mlflow.pytorch`` would pickle the module, and its ``pt2`` format traces
  ``forward`` only.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import mlflow
import numpy as np
import pandas as pd
import torch
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)
from kedro_mlflow.io.models import MlflowModelTrackingDataset

from neural_eq_morphing import serving
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.models.storage import ModelFileError, read_model, write_model
from neural_eq_morphing.serving import SemanticEQ


class TorchModelDataset(AbstractVersionedDataset[SemanticEQModel, SemanticEQModel]):
    """Save and load a trained model as ``{"model_config", "state_dict"}`` with torch.

    Example catalog entry::

        log2.model:
          type: neural_eq_morphing.datasets.torch_model.TorchModelDataset
          filepath: data/06_models/log2/model.pt
          versioned: true
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            filepath: Local path or fsspec URL of the file.
            version: Kedro version (set by the catalog when ``versioned: true``).
            fs_args: Extra arguments for the fsspec filesystem.
            metadata: Free-form metadata (e.g. the kedro-viz layer); not used here.
        """
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(fs_args or {}))
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}

    def load(self) -> SemanticEQModel:
        """Rebuild the module from its config and load its weights (eval mode)."""
        path = get_filepath_str(self._get_load_path(), self._protocol)
        try:
            with self._fs.open(path, mode="rb") as source:
                return read_model(source, path)
        except ModelFileError as error:
            raise DatasetError(str(error)) from error

    def save(self, data: SemanticEQModel) -> None:
        """Write the module's config and weights, atomically (to a ``.part`` file, renamed)."""
        if not isinstance(data, SemanticEQModel):
            raise DatasetError(f"expected a SemanticEQModel to save, got {type(data).__name__}")
        path = get_filepath_str(self._get_save_path(), self._protocol)
        self._fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        # Written whole, then renamed: a run killed mid-write leaves no model.pt (only a
        # .part file), so "the newest version" is never a truncated model.
        partial = f"{path}.part"
        try:
            with self._fs.open(partial, mode="wb") as sink:
                write_model(data, sink)
            self._fs.mv(partial, path)
        finally:
            if self._fs.exists(partial):
                self._fs.rm(partial)

    def _exists(self) -> bool:
        try:
            path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(path)


def pip_requirements() -> list[str]:
    """What loading the logged model needs: this package, torch (no local label), pandas."""
    return [
        f"neural_eq_morphing=={metadata.version('neural_eq_morphing')}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
    ]


class MlflowSemanticEQDataset(MlflowModelTrackingDataset):
    """Log a :class:`~neural_eq_morphing.serving.SemanticEQ` to the active MLflow run.

    As a ``pyfunc`` model of the loader-module kind: the folder holds the weights file
    and the normalisers, and ``mlflow.pyfunc.load_model`` imports
    :mod:`neural_eq_morphing.serving` from the installed package to read them, so nothing
    pickled is ever loaded. The signature and the pip requirements are filled in unless
    ``save_args`` gives them.
    """

    def __init__(self, *, alias: str | None = None, **kwargs: Any) -> None:
        """Create the dataset.

        Args:
            alias: Point this alias of the registered model (``save_args``'
                ``registered_model_name``) at each newly logged version, e.g. ``current``.
            **kwargs: As for ``MlflowModelTrackingDataset``.
        """
        kwargs.setdefault("flavor", "mlflow.pyfunc")
        kwargs.setdefault("pyfunc_workflow", "loader_module")
        super().__init__(**kwargs)
        self._alias = alias

    def _save(self, semantic_eq: SemanticEQ) -> None:
        if not self._logging_activated:  # tracking disabled for this pipeline
            return
        if not isinstance(semantic_eq, SemanticEQ):
            raise DatasetError(f"expected a SemanticEQ to log, got {type(semantic_eq).__name__}")
        arguments = dict(self._save_args)
        with tempfile.TemporaryDirectory() as folder:
            data_path = Path(folder) / "semantic_eq"
            semantic_eq.save(data_path)
            self._save_args = {
                "signature": semantic_eq.signature(),
                "input_example": pd.DataFrame([{"words": semantic_eq.words[0], "amount": 1.0}]),
                "pip_requirements": pip_requirements(),
                **arguments,
                "data_path": str(data_path),
            }
            try:
                super()._save(serving.__name__)
            finally:
                self._save_args = arguments
        version = getattr(self.model_info, "registered_model_version", None)
        if self._alias and version is not None:
            mlflow.MlflowClient().set_registered_model_alias(
                arguments["registered_model_name"], self._alias, str(version)
            )
