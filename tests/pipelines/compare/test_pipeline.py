"""``compare`` end to end on the real file, with 2 seeds and 3 epochs."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from mlflow.tracking import MlflowClient

from tests.conftest import make_real_project

pytestmark = pytest.mark.integration

PARAMS = {"compare": {"n_seeds": 2, "epochs": 3}}


def _run(project):
    with KedroSession.create(project_path=project, runtime_params=PARAMS) as session:
        session.run(pipeline_names=["compare"])
        return session.load_context().catalog


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        project = make_real_project(tmp_path_factory.mktemp("compare"), monkeypatch)
        first = _run(project)
        first_metrics = first.load("compare_seed_metrics")
        second = _run(project)
        yield project, first_metrics, second, MlflowClient()


def test_report_lands_in_reporting_and_mlflow_with_every_figure(compared):
    project, _, catalog, client = compared
    html = catalog.load("compare_report_html")
    markdown = catalog.load("compare_report_md")
    assert html.startswith("<!DOCTYPE html>")
    # Every figure of the Markdown is embedded in the HTML, as a PNG.
    figures = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([^)]+)\)", markdown)
    assert figures
    assert html.count('src="data:image/png;base64,') == len(figures)
    assert all(base64.b64decode(png).startswith(b"\x89PNG") for png in figures)
    for heading in ("Headline", "Held-out protocol", "Ablation", "Findings", "Provenance"):
        assert heading in markdown
    versions = sorted((project / "data" / "08_reporting" / "compare" / "report.html").glob("*/*"))
    assert len(versions) == 2  # one per run, nothing overwritten
    assert versions[-1].read_text() == html
    experiment = client.get_experiment_by_name("neural_eq_morphing")
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.run_name = 'compare'",
        order_by=["attributes.start_time DESC"],
    )
    parent = parents[0]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert {"compare/report.html", "compare/report.md", "compare/summary.csv"} <= artifacts
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    configurations = {child.data.tags["configuration"] for child in children}
    assert {"log1", "log2"} <= configurations
    assert len(children) == len(configurations) * PARAMS["compare"]["n_seeds"]
    assert parent.info.run_id in markdown
    for child in children:
        assert child.info.run_id in markdown


def test_every_summary_number_is_an_mlflow_metric_and_reruns_agree(compared):
    _, first_metrics, catalog, client = compared
    pd.testing.assert_frame_equal(first_metrics, catalog.load("compare_seed_metrics"))
    summary = catalog.load("compare_summary")
    experiment = client.get_experiment_by_name("neural_eq_morphing")
    parent = client.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.run_name = 'compare'",
        order_by=["attributes.start_time DESC"],
    )[0]
    logged = parent.data.metrics
    checked = 0
    for row in summary.itertuples(index=False):
        if pd.notna(row.mean):
            key = f"compare.{row.configuration}.{row.metric}.mean"
            assert logged[key] == pytest.approx(row.mean), key
            checked += 1
    assert checked > 100
    # The first seed's generated preset in the report is its nested run's metric.
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    log2_first = next(r for r in runs if r.info.run_name == "compare · log2 seed 42")
    markdown = catalog.load("compare_report_md")
    (row,) = [line for line in markdown.splitlines() if line.startswith("| peak1_gain_db |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == f"{log2_first.data.metrics['preset.warm.peak1_gain_db']:.2f}"  # log2: warm
    # The headline row of Log 2 shows the logged in-sample silhouette, mean and std.
    headline = markdown.split("## Headline")[1].split("## ")[0]
    (row,) = [line for line in headline.splitlines() if line.startswith("| log2 |")]
    mean = logged["compare.log2.silhouette.in_sample.latent.mean"]
    std = logged["compare.log2.silhouette.in_sample.latent.std"]
    assert f"| {mean:.3f} ± {std:.3f} |" in row
