"""Catalog datasets for trained :class:`~neural_eq_morphing.models.SemanticEQModel` modules.

* :class:`TorchModelDataset` — a versioned local file with the weights and the config
  needed to rebuild the module (``torch.save`` of plain tensors; loaded with
  ``weights_only=True``, so loading never runs pickled code). Works around: kedro-datasets
  9.x has no torch dataset, and its ``pickle.PickleDataset`` would run pickled code on load.
* :class:`MlflowTorchModelDataset` — kedro-mlflow's ``MlflowModelTrackingDataset`` for the
  ``mlflow.pytorch`` flavor, with the input signature filled in from the module. Works
  around: kedro-mlflow 2.0 passes ``save_args`` through but cannot derive a signature
  from the saved object, and a signature in YAML cannot describe the tensor input.
"""

from __future__ import annotations

import pickle
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
import torch
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)
from kedro_mlflow.io.models import MlflowModelTrackingDataset
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from neural_eq_morphing.models.modules import SemanticEQModel, build_model

_FORMAT = "neural_eq_morphing.model/1"


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
                payload = torch.load(source, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
            raise DatasetError(
                f"'{path}' cannot be read as a saved semantic-EQ model ({error}); it may be "
                "truncated or corrupted. Delete its version folder and run training again."
            ) from error
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise DatasetError(
                f"'{path}' is not a saved semantic-EQ model (expected format {_FORMAT})"
            )
        model = build_model(payload["model_config"])
        model.load_state_dict(payload["state_dict"])
        return model.eval()

    def save(self, data: SemanticEQModel) -> None:
        """Write the module's config and weights, atomically (to a ``.part`` file, renamed)."""
        if not isinstance(data, SemanticEQModel):
            raise DatasetError(f"expected a SemanticEQModel to save, got {type(data).__name__}")
        path = get_filepath_str(self._get_save_path(), self._protocol)
        payload = {
            "format": _FORMAT,
            "model_config": data.model_config,
            "state_dict": {key: value.detach().cpu() for key, value in data.state_dict().items()},
        }
        self._fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        # Written whole, then renamed: a run killed mid-write leaves no model.pt (only a
        # .part file), so "the newest version" is never a truncated model.
        partial = f"{path}.part"
        try:
            with self._fs.open(partial, mode="wb") as sink:
                torch.save(payload, sink)
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


def model_signature(model: SemanticEQModel) -> ModelSignature:
    """The signature of a semantic-EQ model: float32 features of shape ``(-1, n_features)``.

    ``forward`` returns a tuple (latent, projection, reconstruction), which MLflow's
    schema cannot describe, so only the input is declared.
    """
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, model.n_features), "features")])
    )


class MlflowTorchModelDataset(MlflowModelTrackingDataset):
    """Log a trained model to the active MLflow run as an ``mlflow.pytorch`` model.

    Same as kedro-mlflow's ``MlflowModelTrackingDataset`` with ``flavor: mlflow.pytorch``,
    except that the signature is derived from the module when ``save_args`` has none.
    """

    def __init__(self, **kwargs: Any) -> None:
        """Create the dataset; arguments as for ``MlflowModelTrackingDataset``."""
        kwargs.setdefault("flavor", "mlflow.pytorch")
        super().__init__(**kwargs)

    def _save(self, model: SemanticEQModel) -> None:
        if "signature" not in self._save_args:
            self._save_args = {**self._save_args, "signature": model_signature(model)}
        super()._save(model)
