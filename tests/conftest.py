"""Shared fixtures: small SAFE-DB files built by the tests, and the real file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from neural_eq_morphing.eq.normalisers import MinMaxNormaliser
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETER_NAMES, UPPER_LIMITS
from neural_eq_morphing.models.evaluation import embed_settings
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.pipelines.data_processing.nodes import (
    filter_terms,
    ingest_safe_db,
    validate_settings,
)
from neural_eq_morphing.pipelines.designs import resolve_extends

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAFE_DB_NAME = "SAFEEqualiserUserData.csv"
SAFE_DB_SHA256 = "cc43858680115070ffdfa41a1158fca1344db2e0096ba73fe68990e90a284af1"
SHORT_EPOCHS = 3


def project_parameters(name: str) -> dict:
    """One ``conf/base/parameters_<name>.yml`` file of the project, as the loader gives it.

    Plain data; the designs' ``extends`` resolved, as the project's config loader does.
    """
    values = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / f"parameters_{name}.yml").read_text())
    if "designs" in values:
        values["designs"] = resolve_extends(values["designs"])
    return values


#: The designs of ``parameters_designs.yml``: tests loop over these, never a fixed list.
DESIGNS: tuple[str, ...] = tuple(project_parameters("designs")["designs"])


def short_designs_params(epochs: int = SHORT_EPOCHS) -> dict:
    """Runtime parameters that shorten every design's training to ``epochs``."""
    return {"designs": {design: {"training": {"epochs": epochs}} for design in DESIGNS}}


def short_designs_cli(epochs: int = SHORT_EPOCHS) -> str:
    """:func:`short_designs_params` as ``kedro run --params`` text."""
    return ",".join(f"designs.{design}.training.epochs={epochs}" for design in DESIGNS)


#: The artifacts the compare pipeline logs to its parent MLflow run (folder ``compare/``).
COMPARE_ARTIFACTS = frozenset(
    {
        "compare/report.html",
        "compare/report.md",
        "compare/summary.csv",
        "compare/verdicts.csv",
        "compare/fold_table.csv",
    }
)

#: The catalog's kedro-viz layers, in the order kedro-viz stacks them (raw at the top).
KEDRO_VIZ_LAYERS = (
    "raw",
    "intermediate",
    "primary",
    "model_input",
    "models",
    "model_output",
    "reporting",
)


def find_real_safe_db() -> Path | None:
    """Locate the real SAFE-DB file: $SAFE_DB_PATH, ../shared/safe-db, or data/01_raw."""
    candidates = [
        os.environ.get("SAFE_DB_PATH"),
        PROJECT_ROOT.parent / "shared" / "safe-db" / SAFE_DB_NAME,
        PROJECT_ROOT / "data" / "01_raw" / SAFE_DB_NAME,
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(autouse=True)
def _no_dangling_mlflow_run() -> Iterator[None]:
    """End an MLflow run that a failing Kedro session left active.

    kedro-mlflow adopts an already active run (and its tracking store) instead of opening
    one in the project's store, so a run left over by one test would swallow the next.
    """
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture(scope="session")
def real_safe_db() -> Path:
    """Path of the real SAFE-DB file; the test is skipped where there is none."""
    path = find_real_safe_db()
    if path is None:
        pytest.skip(
            f"the real {SAFE_DB_NAME} is not available (set SAFE_DB_PATH or put it in "
            "../shared/safe-db/)"
        )
    return path


@pytest.fixture(scope="session")
def real_descriptor_settings(real_safe_db: Path) -> pd.DataFrame:
    """The real file's valid descriptor settings, as the data processing nodes make them."""
    parameters = project_parameters("data_processing")
    ingested = ingest_safe_db(real_safe_db.read_bytes(), parameters["terms"])
    validated, _, _ = validate_settings(ingested, parameters["validation"])
    return filter_terms(validated, parameters["terms"])[0]


def make_line(
    entry_id: object,
    descriptor: str = "warm",
    address: str = "192.0.2.1",
    params: Sequence[object] | None = None,
    channels: tuple[object, object] = (2, 2),
    checksum: str = "0123456789abcdef0123456789abcdef",
) -> str:
    """Build one 25-field SAFE-DB line (no trailing newline)."""
    if params is None:
        params = ((LOWER_LIMITS + UPPER_LIMITS) / 2).tolist()
    fields = [
        str(entry_id),
        descriptor,
        address,
        str(channels[0]),
        str(channels[1]),
        *(str(value) for value in params),
        *([""] * 6),
        checksum,
    ]
    return ",".join(fields)


@pytest.fixture
def line_factory() -> Callable[..., str]:
    """The :func:`make_line` builder."""
    return make_line


def random_settings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random in-range settings in plug-in units (log-uniform frequencies and Q)."""
    unit = rng.random((n, len(LOWER_LIMITS)))
    settings = LOWER_LIMITS + unit * (UPPER_LIMITS - LOWER_LIMITS)
    positive = LOWER_LIMITS > 0
    low, high = np.log10(LOWER_LIMITS[positive]), np.log10(UPPER_LIMITS[positive])
    settings[:, positive] = 10 ** (low + unit[:, positive] * (high - low))
    return settings


@pytest.fixture
def small_safe_db() -> bytes:
    """A small valid file: 3 terms over 9 contributors, 40 rows."""
    rng = np.random.default_rng(0)
    lines = []
    terms = ["warm"] * 16 + ["bright"] * 16 + ["airy"] * 6 + ["rare"] * 2
    for index, term in enumerate(terms, start=1):
        address = f"198.51.100.{index % 9}"
        params = random_settings(rng, 1)[0]
        lines.append(make_line(index, term.capitalize() + " ", address, params))
    return ("\n".join(lines) + "\n").encode()


def make_kedro_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Create a throw-away copy of the project (config only) with its own MLflow store."""
    project = root / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project / "pyproject.toml")
    shutil.copy(PROJECT_ROOT / ".telemetry", project / ".telemetry")
    shutil.copytree(PROJECT_ROOT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "data" / "01_raw").mkdir(parents=True)
    (project / "src").mkdir()  # the package itself is imported from the installed project
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    # Bootstrapping configures Kedro's logging; doing it here, before the test body runs,
    # keeps pytest's log capture attached for the test itself.
    bootstrap_project(project)
    return project


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throw-away copy of the project for one test."""
    return make_kedro_project(tmp_path, monkeypatch)


def make_real_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throw-away project with the real SAFE-DB file in ``data/01_raw`` (or a skip)."""
    real_safe_db = find_real_safe_db()
    if real_safe_db is None:
        pytest.skip(f"the real {SAFE_DB_NAME} is not available")
    project = make_kedro_project(root, monkeypatch)
    shutil.copy(real_safe_db, project / "data" / "01_raw" / SAFE_DB_NAME)
    return project


@pytest.fixture(scope="session")
def short_run(tmp_path_factory: pytest.TempPathFactory):
    """One short run (3 epochs) of data processing, training and evaluation of every design.

    Returns the project path, the loaded catalog, an MLflow client, the experiment and its
    runs; shared by the integration tests of training and evaluation.
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        project = make_real_project(tmp_path_factory.mktemp("short_run"), monkeypatch)
        params = short_designs_params()
        with KedroSession.create(project_path=project, runtime_params=params) as session:
            session.run(pipeline_names=["data_processing", "training", "evaluation"])
            context = session.load_context()
        client = MlflowClient()
        experiment = client.get_experiment_by_name("neural_eq_morphing")
        runs = client.search_runs([experiment.experiment_id])
        yield {
            "project": project,
            "catalog": context.catalog,
            "client": client,
            "experiment": experiment,
            "runs": runs,
        }


#: Evaluation parameters small enough for unit tests (the shape of parameters_evaluation.yml).
SMALL_EVALUATION = {
    "seed": 1,
    "n_random_latents": 200,
    "interpolation_step": 0.25,
    "min_test_rows": 3,
    "morph": ["warm", "bright"],
    "morph_alphas": [0.0, 0.5, 1.0],
    "health_window": 2,
    "n_worst": 3,
    "split_half_repeats": 5,
    "distribution": {"min_test_rows": 8, "k": 3},
    "response": {"n_points": 32, "f_min": 20.0, "f_max": 20000.0},
}


@pytest.fixture
def evaluation_data() -> dict:
    """Plug-in settings, splits and Log 2 tables for 3 terms; an untrained Log 2 model."""
    rng = np.random.default_rng(0)
    settings = pd.DataFrame(random_settings(rng, 60), columns=list(PARAMETER_NAMES))
    settings.insert(0, "term", ["warm", "bright", "airy"] * 20)
    settings.insert(0, "contributor_id", [f"c{i % 6:04d}" for i in range(60)])
    settings.insert(0, "entry_id", np.arange(60))
    split = np.where(
        np.arange(60) < 36, "train", np.where(np.arange(60) < 48, "validation", "test")
    )
    assignment = settings[["entry_id", "contributor_id", "term"]].assign(split=split)
    normaliser = MinMaxNormaliser.from_plugin_limits()
    normalised = settings.copy()
    normalised[list(PARAMETER_NAMES)] = normaliser.transform(
        settings[list(PARAMETER_NAMES)].to_numpy()
    )
    tables = [
        normalised[split == s].reset_index(drop=True) for s in ("train", "validation", "test")
    ]
    model = SemanticEQModel("normalised", seed=0).eval()
    return {
        "settings": settings,
        "assignment": assignment,
        "normaliser": normaliser.to_dict(),
        "tables": tables,
        "model": model,
        "latent": embed_settings(model, tables),
    }


def falling_history(epochs: int = 4) -> pd.DataFrame:
    """A training history whose losses fall over ``epochs`` epochs."""
    falling = np.linspace(3.0, 1.0, epochs)
    return pd.DataFrame(
        {
            "epoch": np.arange(1, epochs + 1),
            **{c: falling for c in ("train_loss", "val_loss", "train_reconstruction")},
            **{c: falling for c in ("val_reconstruction", "train_contrastive")},
            "val_contrastive": falling,
            "contrastive_weight": np.linspace(0.1, 0.5, epochs),
            "learning_rate": np.full(epochs, 1e-3),
            **{c: np.zeros(epochs) for c in ("train_kl", "val_kl", "kl_weight")},
        }
    )
