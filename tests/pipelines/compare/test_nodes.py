import mlflow
import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.datasets.mlflow_runs import MlflowNestedRunsDataset
from neural_eq_morphing.pipelines.compare.nodes import (
    compare_seeds,
    run_configurations,
    summarise_comparison,
    summary_metrics,
)
from neural_eq_morphing.pipelines.compare.report import (
    Block,
    Summary,
    _paired_verdict,
    findings,
    held_out_table,
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
                    "silhouette.in_sample.latent": base / 2,
                    "silhouette.in_sample.baseline": 0.05,
                    "davies_bouldin.in_sample.baseline": 3.0,
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
    assert "log1 does not beat the no-model baseline" in text
    assert "log2 beats the no-model baseline (its normalised parameters) on held-out data" in text
    assert "silhouette 0.500 against 0.350" in text
    assert "frequencies reach 1.60 MHz" in text
    # Removing the schedule costs 0.2 on every seed: the change helps, beyond seed noise.
    assert "log2_no_lr_schedule: +0.200 ± 0.000 (the change helps)" in text
    # On dB error (lower is better) the ablation is 0.2 dB worse: the change helps there too.
    assert "log2_no_lr_schedule: +0.20 ± 0.00 (the change helps)" in text


def test_paired_verdicts_call_small_differences_noise():
    table = pd.DataFrame(
        {
            "configuration": ["log2"] * 3 + ["log2_x"] * 3,
            "seed": [1, 2, 3] * 2,
            "m": [0.50, 0.40, 0.60, 0.52, 0.38, 0.61],
        }
    )
    assert _paired_verdict(table, "log2_x", "m", +1, 3).endswith("(within seed noise)")
    assert _paired_verdict(table, "log2_x", "m", +1, 3).startswith("-0.003 ± ")
    worse = table.assign(m=[0.5, 0.4, 0.6, 0.6, 0.5, 0.7])  # the variant is higher on every seed
    assert _paired_verdict(worse, "log2_x", "m", +1, 2) == "-0.10 ± 0.00 (the change hurts)"
    assert _paired_verdict(worse, "log2_x", "m", -1, 2) == "+0.10 ± 0.00 (the change helps)"


def test_held_out_table_puts_each_metric_in_its_column():
    seed_metrics = _seed_metrics()
    table = held_out_table(Summary(summarise_comparison(seed_metrics)), ["log2"]).set_index("")
    latent = table.loc["log2: latent"]
    assert latent["silhouette (held-out)"].startswith("0.500 ± ")
    assert latent["silhouette (in-sample)"].startswith("0.250 ± ")
    assert latent["Davies–Bouldin (held-out)"].startswith("1.50 ± ")
    assert latent["Davies–Bouldin (in-sample)"].startswith("3.50 ± ")
    baseline = table.loc["log2: no model (its normalised 13 parameters)"]
    assert baseline["silhouette (held-out)"] == "0.350"  # deterministic: no spread shown
    assert baseline["silhouette (in-sample)"] == "0.050"
    assert baseline["Davies–Bouldin (held-out)"] == "1.60"
    assert baseline["Davies–Bouldin (in-sample)"] == "3.00"


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
    mlflow.set_experiment("nested_runs_test")  # not an experiment id left by an earlier store
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


def test_a_configuration_of_an_unknown_variant_is_named_in_the_error():
    compare = {
        "n_seeds": 1,
        "first_seed": 1,
        "epochs": 1,
        "configurations": {"ok": {"variant": "log2"}, "mine": {"variant": "log3"}},
    }
    with pytest.raises(ValueError, match=r"\{'mine': 'log3'\}.*expected one of \['log1', 'log2'\]"):
        run_configurations(pd.DataFrame(), pd.DataFrame(), {}, {}, {}, compare)
