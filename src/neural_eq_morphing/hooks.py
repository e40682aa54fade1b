"""Project hooks: parameters checked up front; provenance tags on each run's MLflow run."""

from __future__ import annotations

import atexit
import logging
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractDataset
from kedro.pipeline import Node
from mlflow.entities import LoggedModelStatus

from neural_eq_morphing.errors import UserError
from neural_eq_morphing.parameter_schema import check_parameters
from neural_eq_morphing.runs import DONE, FAILED, KILLED, RunLedger, wait_for_lock

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


class NoFinishedVersionError(UserError, ValueError):
    """A run needs a dataset that only unfinished (killed, failed or running) runs wrote."""


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence ``logger_name`` below ERROR for the duration (Kedro's "Replacing dataset")."""
    quieted = logging.getLogger(logger_name)
    level = quieted.level
    quieted.setLevel(logging.ERROR)
    try:
        yield
    finally:
        quieted.setLevel(level)


def versioned_config(catalog: Any, name: str) -> dict[str, Any] | None:
    """The catalog config of ``name`` when it is a versioned dataset, else ``None``."""
    if name.startswith("params:") or name == "parameters" or name not in catalog:
        return None
    config = catalog.config_resolver.resolve_pattern(name)
    return dict(config) if isinstance(config, dict) and config.get("versioned") else None


def _at_version(name: str, config: dict[str, Any], load: str, save: str | None) -> Any:
    return AbstractDataset.from_config(name, config, load_version=load, save_version=save)


def newest_finished(
    name: str, config: dict[str, Any], ledger: RunLedger, save_version: str | None = None
) -> tuple[Any, str] | None:
    """The dataset ``name`` at the newest version a finished run wrote, and that version.

    Args:
        name: The dataset's name.
        config: Its (versioned) catalog config (:func:`versioned_config`).
        ledger: The project's run ledger.
        save_version: The save version to give the dataset (the current run's).

    Returns:
        ``None`` when no finished run wrote it.
    """
    for finished in ledger.finished():
        candidate = _at_version(name, config, finished, save_version)
        if candidate.exists():
            return candidate, finished
    return None


class RunConsistencyHook:
    """Each run reads what it wrote, and "the newest" is always a finished run's.

    Kedro names every file a run saves after the run's version and, by default, loads
    the newest version of each dataset, so on its own a run would read files that a
    concurrent run had just written, or a model whose normaliser a killed run never
    wrote. Before a run starts, this hook pins the catalog's versioned datasets:

    * each dataset the run produces is loaded at the version the run saves, so
      concurrent runs never see each other's files;
    * each dataset the run only reads is loaded from the newest run that *finished*
      (:class:`~neural_eq_morphing.runs.RunLedger`); a dataset that only unfinished runs
      wrote is refused with a message that says which pipeline to run. ``--load-versions``
      still wins.

    It also marks dead runs: a run found running in the ledger whose process is gone
    (killed, even with SIGKILL) is recorded as killed, and its MLflow run, nested runs
    and half-logged models are marked KILLED / FAILED, at the next run's start. A run
    stopped by SIGTERM or Ctrl-C marks itself on its way out.

    Args:
        ledger_folder: The ledger's folder, relative to the project root.
    """

    def __init__(self, ledger_folder: str = "data/run_ledger") -> None:
        self._ledger_folder = ledger_folder
        self._ledger: RunLedger | None = None
        self._version: str | None = None
        self._outputs: list[str] = []
        self._inputs: dict[str, str] = {}
        self._previous_sigterm: Any = None
        self._exit_registered = False

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Open the ledger of the project the context belongs to."""
        self._ledger = RunLedger(Path(context.project_path) / self._ledger_folder)

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens a run that a refusal would strand
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Mark dead runs, pin every versioned dataset, and record this run as running."""
        if self._ledger is None:  # a session without a context: nothing to pin against
            return
        version = run_params["run_id"]
        chosen = set(run_params.get("load_versions") or {})
        self._mark_dead_runs()
        outputs = sorted(pipeline.all_outputs() - chosen)
        with _quiet("kedro.io.data_catalog"):
            self._outputs = [name for name in outputs if self._pin(catalog, name, version, version)]
            found = {
                name: self._newest_finished(catalog, name, config, version)
                for name in sorted(pipeline.inputs() - chosen)
                if (config := versioned_config(catalog, name))
            }
        unusable = {name: state for name, state in found.items() if state in _UNUSABLE}
        if unusable:
            raise NoFinishedVersionError(_unusable_inputs_message(unusable, self._ledger.folder))
        inputs = {name: str(source) for name, source in found.items()}
        for source, names in _by_version(inputs).items():
            logger.info("Reading %s from the finished run %s", ", ".join(names), source)
        self._inputs = inputs
        self._ledger.start(
            version,
            {"pipelines": run_params.get("pipeline_names") or ["__default__"], "inputs": inputs},
        )
        self._version = version
        self._stop_on_sigterm()

    @staticmethod
    def _pin(catalog: Any, name: str, load: str, save: str | None) -> bool:
        config = versioned_config(catalog, name)
        if config is None:
            return False
        catalog[name] = _at_version(name, config, load, save)
        return True

    def _newest_finished(
        self, catalog: Any, name: str, config: dict[str, Any], version: str
    ) -> str:
        """Pin ``name`` to the newest finished run that wrote it; that run's version.

        Returns ``unfinished`` when only unfinished runs wrote it, ``missing`` when no run
        did (:data:`_UNUSABLE`).
        """
        if self._ledger is None:  # pragma: no cover - before_pipeline_run returned already
            return "missing"
        found = newest_finished(name, config, self._ledger, save_version=version)
        if found is not None:
            catalog[name] = found[0]
            return found[1]
        return "unfinished" if catalog.exists(name) else "missing"

    def _finish(self, state: str, info: dict[str, Any]) -> None:
        if self._ledger is not None and self._version and self._ledger.is_open(self._version):
            self._ledger.finish(self._version, state, info)
        if self._previous_sigterm is not None:
            with suppress(ValueError):  # not the main thread
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        """Record the run as finished: its outputs may now be read as "the newest"."""
        self._finish(DONE, {"outputs": self._outputs, "inputs": self._inputs})

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any]) -> None:
        """Record the run as failed (the error's type only: messages may quote raw data)."""
        self._finish(FAILED, {"error": type(error).__qualname__})

    def _on_exit(self) -> None:
        """At interpreter exit: a run still open was interrupted (SIGTERM, Ctrl-C)."""
        if self._ledger is None or not self._version or not self._ledger.is_open(self._version):
            return
        self._finish(KILLED, {"reason": "interrupted"})
        if mlflow.active_run() is not None:
            mlflow.end_run(status="KILLED")

    def _stop_on_sigterm(self) -> None:
        """Make SIGTERM unwind the run like Ctrl-C, so it is marked killed on the way out."""
        if not self._exit_registered:
            atexit.register(self._on_exit)
            self._exit_registered = True

        def interrupt(signum: int, _frame: Any) -> None:
            raise KeyboardInterrupt(f"stopped by signal {signum}")

        with suppress(ValueError):  # signals can only be handled in the main thread
            self._previous_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def _mark_dead_runs(self) -> None:
        assert self._ledger is not None
        for dead in self._ledger.dead():
            self._ledger.finish(dead, KILLED, {"reason": "process gone"})
            marked = mark_mlflow_runs_killed(dead)
            logger.warning(
                "The run %s was killed before it finished; its outputs are never read as the "
                "newest%s.",
                dead,
                f" and its MLflow run is marked KILLED ({marked})" if marked else "",
            )


_UNUSABLE = ("unfinished", "missing")


def _unusable_inputs_message(unusable: dict[str, str], ledger_folder: Path) -> str:
    """One message for every input that no finished run wrote, and what to run."""

    def names(state: str) -> str:
        listed = [name for name, found in unusable.items() if found == state]
        shown = ", ".join(f"'{name}'" for name in listed[:3])
        return shown + (f" and {len(listed) - 3} more" if len(listed) > 3 else "")

    parts = []
    if "missing" in unusable.values():
        parts.append(f"{names('missing')} not produced yet")
    if "unfinished" in unusable.values():
        parts.append(
            f"{names('unfinished')} written only by runs that did not finish (killed, failed "
            f"or still running; see {ledger_folder})"
        )
    commands = sorted({_producing_pipeline(name) for name in unusable})
    return (
        f"This run needs {'; and '.join(parts)}. Run {' and '.join(commands)} first, or name "
        "versions with --load-versions."
    )


def _by_version(inputs: dict[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, source in inputs.items():
        grouped.setdefault(source, []).append(name)
    return grouped


def _producing_pipeline(dataset: str) -> str:
    """The command that produces ``dataset`` (``kedro run --pipelines training``)."""
    from kedro.framework.project import pipelines  # noqa: PLC0415 - needs a configured project

    stages = ["data_processing", "training", "evaluation", "compare"]
    for name in [*stages, *sorted(set(pipelines) - set(stages))]:
        if name in pipelines and name != "__default__" and dataset in pipelines[name].all_outputs():
            return f"`kedro run --pipelines {name}`"
    return "`kedro run`"


def mark_mlflow_runs_killed(version: str) -> str:
    """Mark the MLflow runs of the Kedro run ``version`` that are still RUNNING as KILLED.

    kedro-mlflow tags each MLflow run with the Kedro run's version (tag ``run_id``); the
    nested runs under it, and its logged models still PENDING (a ``log_model`` cut off
    before its files were written), are marked too.

    Returns:
        A short account (``"1 run, 0 models"``), or ``""`` when nothing was left open.
        MLflow errors are logged, not raised: marking must not stop the new run.
    """
    try:
        client = mlflow.MlflowClient()
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        if not experiments:
            return ""
        parents = client.search_runs(experiments, filter_string=f"tags.run_id = '{version}'")
        runs, models = 0, 0
        for parent in parents:
            children = client.search_runs(
                experiments, filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
            )
            for run in [parent, *children]:
                if run.info.status == "RUNNING":
                    client.set_terminated(run.info.run_id, status="KILLED")
                    runs += 1
                for model in client.search_logged_models(
                    experiments, filter_string=f"source_run_id = '{run.info.run_id}'"
                ):
                    if model.status == LoggedModelStatus.PENDING:
                        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
                        models += 1
    except Exception as error:
        logger.warning("Could not mark the MLflow runs of the killed run %s: %s", version, error)
        return ""
    if not runs and not models:
        return ""
    return f"{runs} run{'s' * (runs != 1)}, {models} pending model{'s' * (models != 1)} failed"


class TrackingStoreSetupLock:
    """Let one process at a time set up the MLflow store when a Kedro context is created.

    kedro-mlflow opens the tracking store and creates the experiment as the context is
    created; on a new sqlite store that runs MLflow's schema migrations, and two runs
    started at once then fail (``alembic``: "expected to match one row"). The two hook
    objects of this class hold a file lock (``<ledger>/.tracking_setup.lock``) around
    kedro-mlflow's set-up: :attr:`first` takes it before any other ``after_context_created``
    hook, :attr:`last` releases it after all of them.

    Args:
        ledger_folder: The run ledger's folder, relative to the project root.
    """

    def __init__(self, ledger_folder: str = "data/run_ledger") -> None:
        self._ledger_folder = ledger_folder
        self._stream: Any = None
        self.first = _SetupLockFirst(self)
        self.last = _SetupLockLast(self)

    def acquire(self, project_path: Path) -> None:
        """Wait for the lock (the other process's set-up takes a second or two)."""
        self.release()
        folder = project_path / self._ledger_folder
        folder.mkdir(parents=True, exist_ok=True)
        self._stream = open(folder / ".tracking_setup.lock", "a+")  # noqa: SIM115 - held
        if not wait_for_lock(self._stream):
            logger.warning(
                "Another process has held the MLflow set-up lock for a minute; going on "
                "without it (%s)",
                folder / ".tracking_setup.lock",
            )

    def release(self) -> None:
        """Release the lock, if held."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class _SetupLockFirst:
    def __init__(self, lock: TrackingStoreSetupLock) -> None:
        self._lock = lock

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        """Take the set-up lock before kedro-mlflow opens the tracking store."""
        self._lock.acquire(Path(context.project_path))


class _SetupLockLast:
    def __init__(self, lock: TrackingStoreSetupLock) -> None:
        self._lock = lock

    @hook_impl(trylast=True)
    def after_context_created(self, context: Any) -> None:
        """Release the set-up lock once every hook has set the context up."""
        self._lock.release()
