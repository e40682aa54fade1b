"""A versioned dataset whose every save is also logged to the active MLflow run.

Works around: kedro-mlflow 2.0's ``MlflowArtifactDataset`` builds its inner dataset with
a save version of its own, which Kedro 1.x's catalog rejects next to the run's save version
(``VersionAlreadyExistsError``) whenever the inner dataset is ``versioned: true``. This
wrapper takes the catalog's version instead (set ``versioned: true`` on the wrapper) and
hands it to the inner dataset, so the local copy is versioned like every other dataset.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow
from kedro.io.core import (
    AbstractDataset,
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    parse_dataset_definition,
)


class MlflowVersionedArtifactDataset(AbstractDataset[Any, Any]):
    """Save through a (versioned) inner dataset, then log the saved file as an artifact.

    Example catalog entry::

        log2.training_curves_plot:
          type: neural_eq_morphing.datasets.mlflow_artifact.MlflowVersionedArtifactDataset
          versioned: true
          artifact_path: log2/plots
          dataset:
            type: matplotlib.MatplotlibDataset
            filepath: data/08_reporting/log2/training_curves.png

    Nothing is logged when no MLflow run is active (e.g. tracking disabled).
    """

    def __init__(
        self,
        *,
        dataset: str | dict[str, Any],
        artifact_path: str | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the wrapper.

        Args:
            dataset: The inner dataset's type or config (without ``versioned``).
            artifact_path: Folder of the artifact in the run; ``None`` for the root.
            version: Set by the catalog when the wrapper is ``versioned: true``.
            metadata: Free-form metadata (e.g. the kedro-viz layer); not used here.
        """
        config = {"type": dataset} if isinstance(dataset, str) else dict(dataset)
        if config.pop("versioned", False):
            raise DatasetError(
                "set 'versioned: true' on the MlflowVersionedArtifactDataset entry, "
                "not on its inner dataset"
            )
        dataset_class, arguments = parse_dataset_definition(config)
        if version is not None:
            if not issubclass(dataset_class, AbstractVersionedDataset):
                raise DatasetError(f"{dataset_class.__qualname__} cannot be versioned")
            arguments["version"] = version
        self._dataset = dataset_class(**arguments)
        self._artifact_path = artifact_path
        self.metadata = metadata

    def _saved_path(self) -> str:
        inner = self._dataset
        if isinstance(inner, AbstractVersionedDataset) and inner._version is not None:
            return str(inner._get_versioned_path(inner.resolve_save_version()))
        filepath = getattr(inner, "_filepath", None)
        if filepath is None:
            raise DatasetError(f"cannot tell where {type(inner).__qualname__} saved its data")
        return str(PurePosixPath(filepath))

    def load(self) -> Any:
        """Load the inner dataset (its latest version, or the one asked for)."""
        return self._dataset.load()

    def save(self, data: Any) -> None:
        """Save through the inner dataset, then log the file to the active MLflow run."""
        self._dataset.save(data)
        if mlflow.active_run() is not None:
            self._log_saved_file()

    def _log_saved_file(self) -> None:
        path = self._saved_path()
        protocol = getattr(self._dataset, "_protocol", "file")
        filesystem = getattr(self._dataset, "_fs", None)
        if protocol in ("file", "local") or filesystem is None:
            mlflow.log_artifact(path, artifact_path=self._artifact_path)
            return
        # On object storage (s3://, gcs://, memory://, …): MLflow logs local files only.
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / PurePosixPath(path).name
            filesystem.get(get_filepath_str(PurePosixPath(path), protocol), str(local))
            mlflow.log_artifact(str(local), artifact_path=self._artifact_path)

    def _exists(self) -> bool:
        return self._dataset.exists()

    def _describe(self) -> dict[str, Any]:
        return {"dataset": str(self._dataset), "artifact_path": self._artifact_path}
