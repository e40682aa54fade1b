import mlflow
import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.datasets.mlflow_runs import MlflowNestedRunsDataset
from neural_eq_morphing.models import evaluation as ev
from neural_eq_morphing.models.modules import SemanticEQModel
from neural_eq_morphing.pipelines.compare.nodes import (
    compare_seeds,
    configurations_of,
    run_configurations,
    seed_runs,
    summarise_comparison,
    summary_metrics,
)
from neural_eq_morphing.pipelines.compare.report import (
    Summary,
    _paired_verdict,
    against_log2,
    findings,
    held_out_table,
)
from neural_eq_morphing.pipelines.data_processing.nodes import (
    fit_normaliser,
    normalise_splits,
    split_by_contributor,
)
from neural_eq_morphing.pipelines.evaluation.nodes import evaluate, metrics_for_mlflow
from tests.conftest import DESIGNS, SMALL_EVALUATION, project_parameters, random_settings


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
        {
            "log1": {"design": "log1"},
            "log2": {"design": "log2"},
            "log2_no_lr_schedule": {"design": "log2"},
        },
    )
    text = " ".join(sentences)
    assert "log1 does not beat the no-model baseline" in text
    assert "log2 beats the no-model baseline (its normalised parameters) on held-out data" in text
    assert "silhouette 0.500 against 0.350" in text
    assert "frequencies reach 1.60 MHz" in text
    # Removing the schedule costs 0.2 on every seed: the change helps, beyond seed noise.
    assert "log2_no_lr_schedule: +0.200 ± 0.000 (Log 2 better)" in text
    # On dB error (lower is better) the ablation is 0.2 dB worse: the change helps there too.
    assert "log2_no_lr_schedule: +0.20 ± 0.00 (Log 2 better)" in text


def test_log2_is_judged_against_its_ablations_and_other_designs_not_log1s():
    configurations = {
        "log1": {"design": "log1"},
        "log2": {"design": "log2"},
        "log2_latent16": {"design": "log2_latent16"},
        "log2_no_lr_schedule": {"design": "log2"},
        "log1_consistent_units": {"design": "log1"},
    }
    assert against_log2(configurations) == ["log2_latent16", "log2_no_lr_schedule"]


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
    assert _paired_verdict(worse, "log2_x", "m", +1, 2) == "-0.10 ± 0.00 (Log 2 worse)"
    assert _paired_verdict(worse, "log2_x", "m", -1, 2) == "+0.10 ± 0.00 (Log 2 better)"


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


def test_nested_runs_carry_parameters_and_a_name_unlike_a_top_level_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("nested_runs_test")  # not an experiment id left by an earlier store
    dataset = MlflowNestedRunsDataset(
        name_prefix="compare · ", name_columns=["configuration", "seed"]
    )
    table = pd.DataFrame(
        {
            "configuration": ["log2", "log2"],
            "seed": [1, 2],
            "score": [0.5, np.nan],
            "param.training.epochs": ["150", "150"],
            "param.seed": ["1", "2"],
        }
    )
    with pytest.raises(Exception, match="no active MLflow run"):
        dataset.save(table)
    with mlflow.start_run() as parent:
        mlflow.set_tag("git_commit", "abc")
        dataset.save(table)
        runs = dataset.load()
    assert runs["run_name"].tolist() == ["compare · log2 seed 1", "compare · log2 seed 2"]
    assert set(runs["parent_run_id"]) == {parent.info.run_id}
    assert set(runs["git_commit"]) == {"abc"}
    client = mlflow.tracking.MlflowClient()
    first = client.get_run(runs["run_id"][0])
    assert first.data.metrics == {"score": 0.5}
    assert first.data.params == {"training.epochs": "150", "seed": "1"}
    assert first.data.tags["configuration"] == "log2"
    assert client.get_run(runs["run_id"][1]).data.metrics == {}  # NaN is not logged


def _designs():
    return project_parameters("designs")["designs"]


def test_configurations_are_every_design_then_the_ablations_resolved_from_their_design():
    compare = project_parameters("compare")["compare"]
    designs = _designs()
    configurations = configurations_of(designs, compare)
    assert list(configurations) == [*DESIGNS, *compare["configurations"]]
    for name in DESIGNS:
        resolved = configurations[name]
        assert resolved["design"] == name
        assert resolved["changes"] == {}
        assert resolved["label"] == designs[name]["label"]
        assert resolved["feature_normaliser"] == designs[name]["feature_normaliser"]
        assert resolved["training"] == {
            k: v for k, v in designs[name]["training"].items() if k != "seed"
        }
    for name, spec in compare["configurations"].items():
        resolved, base = configurations[name], designs[spec["design"]]
        assert resolved["changes"] == {k: v for k, v in spec.items() if k != "design"}
        expected = {**base["training"], **spec.get("training", {})}
        expected.pop("seed")
        assert resolved["training"] == expected
        assert resolved["feature_normaliser"] == {
            **base["feature_normaliser"],
            **spec.get("feature_normaliser", {}),
        }


def test_compare_designs_selects_and_epochs_shorten():
    designs = _designs()
    first = next(iter(designs))
    chosen = configurations_of(designs, {"designs": [first], "configurations": {}, "epochs": 2})
    assert list(chosen) == [first]
    assert chosen[first]["training"]["epochs"] == 2


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        ({"designs": ["log3"]}, r"unknown design\(s\) \['log3'\]"),
        ({"configurations": {"mine": {"design": "log3"}}}, r"mine must name the design"),
        ({"configurations": {"mine": {"design": "log2", "trainin": {}}}}, r"unknown key.*trainin"),
        ({"configurations": {"log2": {"design": "log2"}}}, r"has the name of a design"),
        ({"configurations": {"Bad-Name": {"design": "log2"}}}, r"not usable as a namespace"),
    ],
)
def test_bad_configurations_are_named_in_the_error(compare, message):
    with pytest.raises(ValueError, match=message):
        configurations_of(_designs(), compare)


def _tiny_settings() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    n = 90
    settings = pd.DataFrame(random_settings(rng, n), columns=list(ev.PARAMS))
    settings.insert(0, "term", ["warm", "bright", "airy"] * (n // 3))
    settings.insert(0, "contributor_id", [f"c{i % 15:04d}" for i in range(n)])
    settings.insert(0, "entry_id", np.arange(n))
    fractions = {"train": 0.6, "validation": 0.2, "test": 0.2}
    assignment, _ = split_by_contributor(settings, {"fractions": fractions, "seed": 0})
    return settings, assignment


def test_a_metric_added_to_the_evaluation_reaches_run_metrics_and_compare_summary(monkeypatch):
    original = ev.flat_metrics
    monkeypatch.setattr(
        ev, "flat_metrics", lambda *a, **k: {**original(*a, **k), "new_metric": 0.25}
    )
    settings, assignment = _tiny_settings()
    designs = _designs()
    design = next(iter(designs))
    compare = {
        "n_seeds": 2,
        "first_seed": 1,
        "epochs": 2,
        "designs": [design],
        "configurations": {},
    }
    configurations = configurations_of(designs, compare)
    seed_metrics, histories, examples, _ = run_configurations(
        settings, assignment, configurations, SMALL_EVALUATION, compare
    )
    summary = summarise_comparison(seed_metrics)
    (row,) = summary[summary["metric"] == "new_metric"].itertuples()
    assert (row.configuration, row.mean, row.n) == (design, 0.25, 2)
    assert summary_metrics(summary)[f"{design}.new_metric.mean"]["value"] == 0.25
    runs = seed_runs(seed_metrics, configurations)
    assert runs["new_metric"].tolist() == [0.25, 0.25]
    assert runs["param.design"].tolist() == [design, design]
    assert runs["param.training.epochs"].tolist() == ["2", "2"]
    assert runs["param.seed"].tolist() == ["1", "2"]
    assert set(histories["seed"]) == {1, 2}
    assert set(examples[design]) >= {"presets", "morph", "latent", "history", "wall_s"}
    # The same metric in a design's run: the evaluation pipeline's nodes.
    feature_normaliser = fit_normaliser(
        settings, assignment, configurations[design]["feature_normaliser"]
    )
    tables = normalise_splits(settings, assignment, feature_normaliser)
    model = SemanticEQModel(configurations[design]["training"]["decoder_head"], seed=0)
    document, *_ = evaluate(
        model,
        feature_normaliser,
        feature_normaliser,
        *tables,
        settings,
        examples[design]["history"],
        SMALL_EVALUATION,
    )
    assert document["metrics"]["new_metric"] == 0.25
    assert metrics_for_mlflow(document)["eval.new_metric"]["value"] == 0.25
