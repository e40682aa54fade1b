"""One nested MLflow run per row of a table, under the run kedro-mlflow opened.

The comparison trains every configuration over several seeds inside one Kedro run; this
dataset gives each (configuration, seed) its own child run, so that the MLflow UI can
compare them, while the parent run holds the summary and the report.

Works around: kedro-mlflow 2.0 has no dataset for nested runs, and its ``run.nested``
option stacks one run per node instead of one per row (and never closes them).
"""

from __future__ import annotations

import time
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

_BATCH = 1000
_PARENT_TAG = "mlflow.parentRunId"


class MlflowNestedRunsDataset(AbstractDataset[pd.DataFrame, pd.DataFrame]):
    """Save: one child run per row (name, tags and numeric metrics). Load: those runs.

    Example catalog entry::

        compare_seed_runs:
          type: neural_eq_morphing.datasets.mlflow_runs.MlflowNestedRunsDataset
          name_prefix: "compare · "
          name_columns: [configuration, seed]
          tag_columns: [configuration, seed]
          param_prefix: "param."

    Columns starting with ``param_prefix`` become the run's parameters (prefix removed);
    every other numeric column that is not a tag becomes a metric (step 0); NaN is
    skipped.
    ``load`` returns ``run_id``, ``run_name``, ``parent_run_id``, the parent's
    ``git_commit`` tag and the tag columns of the children of the active (or last
    saved-to) parent run.
    """

    def __init__(
        self,
        *,
        name_columns: list[str],
        name_prefix: str = "",
        tag_columns: list[str] | None = None,
        param_prefix: str = "param.",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create the dataset.

        Args:
            name_columns: Columns joined (with spaces, ``seed`` prefixed) into run names.
            name_prefix: Text in front of every run name, so that a nested run never
                reads like a top-level one.
            tag_columns: Columns stored as tags (default: ``name_columns``).
            param_prefix: Columns with this prefix are logged as parameters.
            metadata: Free-form metadata (e.g. the kedro-viz layer); not used here.
        """
        self._name_prefix = name_prefix
        self._param_prefix = param_prefix
        self._name_columns = list(name_columns)
        self._tag_columns = list(tag_columns or name_columns)
        self._parent_run_id: str | None = None
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {
            "name_prefix": self._name_prefix,
            "name_columns": self._name_columns,
            "tag_columns": self._tag_columns,
            "param_prefix": self._param_prefix,
        }

    def _run_name(self, row: pd.Series) -> str:
        return self._name_prefix + " ".join(
            f"seed {row[c]}" if c == "seed" else str(row[c]) for c in self._name_columns
        )

    def save(self, data: pd.DataFrame) -> None:
        """Create one child run per row under the active run."""
        parent = mlflow.active_run()
        if parent is None:
            raise DatasetError("no active MLflow run to nest the runs under")
        self._parent_run_id = parent.info.run_id
        client = MlflowClient()
        param_columns = [c for c in data.columns if c.startswith(self._param_prefix)]
        metric_columns = [
            column
            for column in data.columns
            if column not in self._tag_columns
            and column not in param_columns
            and pd.api.types.is_numeric_dtype(data[column])
        ]
        timestamp = int(time.time() * 1000)
        for _, row in data.iterrows():
            child = client.create_run(
                parent.info.experiment_id,
                run_name=self._run_name(row),
                tags={
                    _PARENT_TAG: self._parent_run_id,
                    **{column: str(row[column]) for column in self._tag_columns},
                },
            )
            metrics = [
                Metric(column, float(row[column]), timestamp, 0)
                for column in metric_columns
                if np.isfinite(row[column])
            ]
            params = [
                Param(column.removeprefix(self._param_prefix), str(row[column]))
                for column in param_columns
            ]
            for start in range(0, max(len(metrics), len(params)), _BATCH):
                client.log_batch(
                    child.info.run_id,
                    metrics=metrics[start : start + _BATCH],
                    params=params[start : start + _BATCH],
                )
            client.set_terminated(child.info.run_id)

    def load(self) -> pd.DataFrame:
        """The child runs of the parent run: ids, names and tag columns."""
        parent = mlflow.active_run()
        parent_id = parent.info.run_id if parent is not None else self._parent_run_id
        if parent_id is None:
            raise DatasetError("no parent MLflow run to list the nested runs of")
        client = MlflowClient()
        parent_run = client.get_run(parent_id)
        experiment = parent_run.info.experiment_id
        git_commit = parent_run.data.tags.get("git_commit", "unknown")
        runs = client.search_runs(
            [experiment], filter_string=f"tags.`{_PARENT_TAG}` = '{parent_id}'"
        )
        frame = pd.DataFrame(
            [
                {
                    "run_id": run.info.run_id,
                    "run_name": run.info.run_name,
                    "parent_run_id": parent_id,
                    "git_commit": git_commit,
                    **{column: run.data.tags.get(column) for column in self._tag_columns},
                }
                for run in runs
            ],
            columns=["run_id", "run_name", "parent_run_id", "git_commit", *self._tag_columns],
        )
        return frame.sort_values("run_name", ignore_index=True)
