import mlflow
import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.datasets.mlflow_runs import MlflowNestedRunsDataset
from neural_eq_morphing.pipelines.compare.nodes import (
    compare_seeds,
    summarise_comparison,
    summary_metrics,
)
from neural_eq_morphing.pipelines.compare.report import (
    Block,
    Summary,
    findings,
    to_html,
    to_markdown,
)


def _seed_metrics() -> pd.DataFrame:
    rows = []
    for configuration, base in (("log1", 0.1), ("log2", 0.5), ("log2_no_lr_schedule", 0.3)):
        for seed, noise in ((1, -0.01), (2, 0.01)):
            rows.append(
                {
                    "configuration": configuration,
                    "seed": seed,
                    "silhouette.held_out.latent": base + noise,
                    "silhouette.held_out.baseline": 0.35,
                    "davies_bouldin.held_out.latent": 2.0 - base,
                    "davies_bouldin.held_out.baseline": 1.6,
                    "davies_bouldin.in_sample.latent": 4.0 - base,
                    "reconstruction_rms_db.mean": 3.0 - base,
                    "valid_share.random_latents": 0.0 if configuration == "log1" else 1.0,
                    "valid_frequency_share.random_latents": 0.0 if configuration == "log1" else 1.0,
                    "max_frequency_hz": 1.6e6 if configuration == "log1" else 1e4,
                }
            )
    return pd.DataFrame(rows)


def test_compare_seeds():
    assert compare_seeds({"n_seeds": 3, "first_seed": 42}) == [42, 43, 44]
    with pytest.raises(ValueError, match="at least 1"):
        compare_seeds({"n_seeds": 0, "first_seed": 1})


def test_summary_is_mean_and_sample_std_per_configuration_and_metric():
    summary = summarise_comparison(_seed_metrics())
    row = summary[
        (summary["configuration"] == "log2") & (summary["metric"] == "silhouette.held_out.latent")
    ].iloc[0]
    assert row["mean"] == pytest.approx(0.5)
    assert row["std"] == pytest.approx(np.std([0.49, 0.51], ddof=1))
    assert row["n"] == 2
    assert list(dict.fromkeys(summary["configuration"])) == ["log1", "log2", "log2_no_lr_schedule"]
    metrics = summary_metrics(summary)
    assert metrics["log2.silhouette.held_out.latent.mean"] == {
        "value": pytest.approx(0.5),
        "step": 0,
    }


def test_findings_are_filled_from_the_numbers():
    seed_metrics = _seed_metrics()
    sentences = findings(
        Summary(summarise_comparison(seed_metrics)),
        seed_metrics,
        ["log1", "log2", "log2_no_lr_schedule"],
    )
    text = " ".join(sentences)
    assert "log1 does not beat the raw-parameter baseline" in text
    assert (
        "log2 beats the raw-parameter baseline on held-out data: silhouette 0.500 against 0.350"
        in text
    )
    assert "frequencies reach 1.60 MHz" in text
    assert "undone in 'log2_no_lr_schedule': 0.300 there against 0.500 for Log 2." in text
    assert "scores better than Log 2" not in text


def test_renderers_escape_text_and_embed_figures():
    blocks = [
        Block("heading", "Report <1>"),
        Block("text", "a & b"),
        Block("table", pd.DataFrame({"x": ["<y>"]})),
        Block("figure", b"\x89PNG fake"),
        Block("list", ["one", "two"]),
    ]
    page = to_html(blocks)
    assert page.startswith("<!DOCTYPE html>")
    assert "Report &lt;1&gt;" in page
    assert "a &amp; b" in page
    assert "&lt;y&gt;" in page
    assert 'src="data:image/png;base64,' in page
    markdown = to_markdown(blocks)
    assert "# Report <1>" in markdown
    assert "| x |" in markdown
    assert "![figure](data:image/png;base64," in markdown
    assert "- two" in markdown


def test_nested_runs_are_created_under_the_active_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    dataset = MlflowNestedRunsDataset(name_columns=["configuration", "seed"])
    table = pd.DataFrame(
        {"configuration": ["log2", "log2"], "seed": [1, 2], "score": [0.5, np.nan]}
    )
    with pytest.raises(Exception, match="no active MLflow run"):
        dataset.save(table)
    with mlflow.start_run() as parent:
        mlflow.set_tag("git_commit", "abc")
        dataset.save(table)
        runs = dataset.load()
    assert runs["run_name"].tolist() == ["log2 seed 1", "log2 seed 2"]
    assert set(runs["parent_run_id"]) == {parent.info.run_id}
    assert set(runs["git_commit"]) == {"abc"}
    client = mlflow.tracking.MlflowClient()
    first = client.get_run(runs["run_id"][0])
    assert first.data.metrics == {"score": 0.5}
    assert first.data.tags["configuration"] == "log2"
    assert client.get_run(runs["run_id"][1]).data.metrics == {}  # NaN is not logged
