"""``compare`` end to end on the real file, once: 2 seeds, 3 epochs, 4 folds."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from mlflow.tracking import MlflowClient

from tests.conftest import COMPARE_ARTIFACTS, make_real_project

pytestmark = pytest.mark.integration

PARAMS = {"compare": {"n_seeds": 2, "epochs": 3, "folds": {"min_rows": 200, "k": 2}}}


def _run(project):
    with KedroSession.create(project_path=project, runtime_params=PARAMS) as session:
        session.run(pipeline_names=["compare"])
        return session.load_context().catalog


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        project = make_real_project(tmp_path_factory.mktemp("compare"), monkeypatch)
        # One run: the unit tier checks that the same comparison twice gives the same numbers.
        yield project, _run(project), MlflowClient()


def test_report_lands_in_reporting_and_mlflow_with_every_figure(compared):
    project, catalog, client = compared
    html = catalog.load("compare_report_html")
    markdown = catalog.load("compare_report_md")
    assert html.startswith("<!DOCTYPE html>")
    # Every figure of the Markdown is embedded in the HTML, as a PNG.
    figures = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([^)]+)\)", markdown)
    assert figures
    assert html.count('src="data:image/png;base64,') == len(figures)
    assert all(base64.b64decode(png).startswith(b"\x89PNG") for png in figures)
    for heading in ("## Verdict", "## Folds", "## Ablation", "## Reproduction", "## Provenance"):
        assert heading in markdown
    # Every design beyond Log 2 is judged against it, and the headline questions answered.
    assert "## Designs against Log 2 (fix), on the same folds" in markdown
    assert "**Does any design beat the normalised parameters on probe_auc?**" in markdown
    assert (
        "**Does any design beat the resampled training presets on energy_distance_db?**" in markdown
    )
    # Generation is stated against the word-only optimum, with the floor and the references.
    assert "## Generation: the word-only optimum, and the floor" in markdown
    assert "the word-only optimum" in markdown.split("## Verdict", 1)[1].split("##", 1)[0]
    assert "## Distributions of drawn settings" in markdown
    assert "realism" not in markdown
    versions = sorted((project / "data" / "08_reporting" / "compare" / "report.html").glob("*/*"))
    assert len(versions) == 1  # one run, one version
    assert versions[-1].read_text() == html
    experiment = client.get_experiment_by_name("neural_eq_morphing")
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.run_name = 'compare'",
        order_by=["attributes.start_time DESC"],
    )
    parent = parents[0]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert artifacts >= COMPARE_ARTIFACTS
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    configurations = {child.data.tags["configuration"] for child in children}
    assert {"log1", "log2"} <= configurations
    folds = set(catalog.load("fold_table")["fold"])
    assert len(children) == len(configurations) * len(folds) * PARAMS["compare"]["n_seeds"]
    assert parent.info.run_id in markdown
    assert f"with {len(children)} nested runs (one per configuration, fold and seed)" in markdown


def test_the_fold_table_holds_no_contributor_in_two_parts_and_shows_in_the_report(compared):
    _, catalog, _ = compared
    fold_table = catalog.load("fold_table")
    per_fold = fold_table.groupby(["fold", "contributor_id"])["part"].nunique()
    assert (per_fold == 1).all()
    # two contributors with at least 200 rows, then two grouped folds
    assert fold_table.drop_duplicates("fold")["kind"].tolist() == [
        "leave_one_out",
        "leave_one_out",
        "grouped",
        "grouped",
    ]
    markdown = catalog.load("compare_report_md")
    folds = markdown.split("## Folds")[1].split("## ")[0]
    for fold in fold_table["fold"].unique():
        assert f"| {fold} |" in folds


def test_every_summary_number_is_an_mlflow_metric(compared):
    _, catalog, client = compared
    summary = catalog.load("compare_summary")
    verdicts = catalog.load("compare_verdicts")
    experiment = client.get_experiment_by_name("neural_eq_morphing")
    parent = client.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.run_name = 'compare'",
        order_by=["attributes.start_time DESC"],
    )[0]
    logged = parent.data.metrics
    checked = 0
    for row in summary.itertuples(index=False):
        for statistic in ("mean", "ci_low", "ci_high"):
            value = getattr(row, statistic)
            if pd.notna(value):
                key = f"compare.{row.configuration}.{row.metric}.{statistic}"
                assert logged[key] == pytest.approx(value), key
                checked += 1
    assert checked > 300
    for row in verdicts.itertuples(index=False):
        key = f"compare.{row.configuration}.vs.{row.against}.{row.metric}.difference"
        assert logged[key] == pytest.approx(row.difference), key
    # The verdict table's Log 2 silhouette cell is the logged mean and interval.
    markdown = catalog.load("compare_report_md")
    verdict = markdown.split("## Verdict")[1].split("## ")[0]
    verdict = verdict.split("Each model against the strongest baseline")[1]
    (row,) = [line for line in verdict.splitlines() if line.startswith("| silhouette |")]
    mean, low, high = (
        logged[f"compare.log2.silhouette.{s}"] for s in ("mean", "ci_low", "ci_high")
    )
    assert f"| {mean:.3f} [{low:.3f}, {high:.3f}] |" in row
    # Per fold, the baselines' numbers are logged too.
    fold = catalog.load("fold_table")["fold"].iloc[0]
    assert f"compare.lda.{fold}.silhouette" in logged
