"""The runs, metrics, artifacts and models are in MLflow, read through its REST API."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import FIRST_FOLD, MlflowRest, TrackedRuns, newest_version
from tests.conftest import COMPARE_ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PLOTS = {"term_curves.png", "morph.png", "latent_map.png", "training_curves.png"}
#: Configurations of the comparison (parameters_compare.yml).


def list_artifacts(rest: MlflowRest, run: dict, path: str = "") -> set[str]:
    """Paths of the artifacts directly under ``path`` of ``run``."""
    listing = rest.get("/api/2.0/mlflow/artifacts/list", run_id=run["info"]["run_id"], path=path)
    return {item["path"] for item in listing.get("files", [])}


def test_experiment_opens_in_the_model_training_view(rest: MlflowRest):
    tags = {tag["key"]: tag["value"] for tag in rest.experiment().get("tags", [])}
    assert tags.get("mlflow.experimentKind") == "custom_model_development"


def test_default_run_is_named_by_design_and_seed_and_tagged(tracked: TrackedRuns):
    run = tracked.default_run
    assert run["info"]["status"] == "FINISHED"
    assert run["info"]["run_name"] == f"log2 seed {run['tags']['seed']}"
    assert run["tags"]["seed"] == "42"
    assert len(run["tags"]["safe_db_sha256"]) == 64
    assert run["tags"]["git_commit"]


def test_default_run_has_the_whole_metric_history(rest: MlflowRest, tracked: TrackedRuns):
    run_id = tracked.default_run["info"]["run_id"]
    epochs = int(tracked.param(tracked.default_run, "designs.log2.training.epochs"))
    for key in ("log2.train_loss", "log2.val_loss", "log2.learning_rate"):
        history = rest.get("/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key)
        steps = sorted(point["step"] for point in history["metrics"])
        assert steps == list(range(1, epochs + 1)), key  # step = epoch, from 1
    latest = {m["key"]: m["value"] for m in tracked.default_run["data"]["metrics"]}
    assert latest["log2.eval.valid_share.random_latents"] == 1.0


def test_default_run_has_plots_metrics_and_normaliser(rest: MlflowRest, tracked: TrackedRuns):
    run = tracked.default_run
    assert {f"log2/plots/{name}" for name in PLOTS} <= list_artifacts(rest, run, "log2/plots")
    assert {
        "log2/evaluation_metrics.json",
        "log2/generated_presets.csv",
        "log2/morph_table.csv",
        "log2/decoder_normaliser.json",
    } <= list_artifacts(rest, run, "log2")
    png = rest.raw(
        "/get-artifact", path="log2/plots/term_curves.png", run_uuid=run["info"]["run_id"]
    )
    assert png.startswith(b"\x89PNG")


def test_default_run_logged_the_model(rest: MlflowRest, tracked: TrackedRuns):
    models = rest.post(
        "/api/2.0/mlflow/logged-models/search",
        {"experiment_ids": [tracked.experiment["experiment_id"]], "max_results": 100},
    )["models"]
    run_id = tracked.default_run["info"]["run_id"]
    ours = [m["info"] for m in models if m["info"]["source_run_id"] == run_id]
    assert [m["name"] for m in ours] == ["log2_semantic_eq"]
    assert ours[0]["status"] == "LOGGED_MODEL_READY"


def test_compare_parent_run_holds_summary_and_report(
    rest: MlflowRest, tracked: TrackedRuns, finished_project: Path
):
    run = tracked.compare_run
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    for config in ("log1", "log2"):
        assert f"compare.{config}.silhouette.mean" in metrics
        assert f"compare.{config}.vs.lda.silhouette.difference" in metrics
    assert metrics["compare.log2.valid_share.random_latents.mean"] == 1.0
    assert list_artifacts(rest, run, "compare") >= COMPARE_ARTIFACTS
    # The report in MLflow is the one the catalog wrote last.
    logged = rest.raw("/get-artifact", path="compare/report.md", run_uuid=run["info"]["run_id"])
    on_disk = newest_version(finished_project / "data/08_reporting/compare/report.md")
    assert logged.decode() == on_disk.read_text()


def test_compare_has_one_nested_run_per_configuration_fold_and_seed(tracked: TrackedRuns):
    names = sorted(run["info"]["run_name"] for run in tracked.children)
    seeds = int(tracked.param(tracked.compare_run, "compare.n_seeds"))
    configurations = {run["tags"]["configuration"] for run in tracked.children}
    folds = {run["tags"]["fold"] for run in tracked.children}
    assert {"log1", "log2"} <= configurations
    assert FIRST_FOLD in folds
    assert len(names) == len(configurations) * len(folds) * seeds
    assert len(set(names)) == len(names)
    # A nested run never reads like the top-level `kedro run` of the same design and seed.
    assert tracked.default_run["info"]["run_name"] not in names
    for design in ("log1", "log2"):
        child = tracked.child(f"compare · {design} {FIRST_FOLD} seed 42")
        assert child["info"]["status"] == "FINISHED"
        assert child["tags"]["configuration"] == design
        metric_keys = {m["key"] for m in child["data"]["metrics"]}
        assert {"silhouette", "probe_auc", "reconstruction_rms_db.mean"} <= metric_keys
        # Its parameters, for MLflow's Compare page.
        assert tracked.param(child, "design") == design
        assert tracked.param(child, "seed") == "42"
        assert tracked.param(child, "fold") == FIRST_FOLD
        assert int(tracked.param(child, "training.epochs")) >= 1
