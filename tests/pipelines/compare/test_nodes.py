from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.datasets.mlflow_runs import MlflowNestedRunsDataset
from neural_eq_morphing.models import evaluation as ev
from neural_eq_morphing.models.config import TrainingConfig
from neural_eq_morphing.models.metrics import EVALUATION, REGISTRY, Metric
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.pipelines.compare.nodes import (
    compare_seeds,
    comparison_metrics,
    comparisons,
    configurations_of,
    ensembles,
    fit_folds,
    fit_validation_folds,
    judge_comparison,
    make_folds,
    seed_runs,
    strongest_baselines,
    summarise_comparison,
)
from neural_eq_morphing.pipelines.data_processing.nodes import (
    fit_normaliser,
    normalise_splits,
    split_by_contributor,
)
from neural_eq_morphing.pipelines.evaluation.nodes import evaluate, metrics_for_mlflow
from tests.conftest import DESIGNS, SMALL_EVALUATION, project_parameters
from tests.pipelines.compare.conftest import TINY_COMPARE, compared_tiny, tiny_settings


def test_compare_seeds():
    assert compare_seeds({"n_seeds": 3, "first_seed": 42}) == [42, 43, 44]
    with pytest.raises(ValueError, match="at least 1"):
        compare_seeds({"n_seeds": 0, "first_seed": 1})


def test_nested_runs_carry_parameters_and_a_name_unlike_a_top_level_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("nested_runs_test")  # not an experiment id left by an earlier store
    dataset = MlflowNestedRunsDataset(
        name_prefix="compare · ", name_columns=["configuration", "fold", "seed"]
    )
    table = pd.DataFrame(
        {
            "configuration": ["log2", "log2"],
            "fold": ["loco-c0001", "loco-c0001"],
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
    assert runs["run_name"].tolist() == [
        "compare · log2 loco-c0001 seed 1",
        "compare · log2 loco-c0001 seed 2",
    ]
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
    # From --params (where a comma separates parameters): names separated by spaces.
    two = list(designs)[:2]
    spelled = configurations_of(designs, {"designs": " ".join(two), "configurations": {}})
    assert list(spelled) == two


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


def test_every_configuration_sees_the_same_folds_and_seeds_and_the_designs_a_reproduction():
    designs = _designs()
    design = next(iter(designs))
    ablation = {"design": design, "label": "fewer epochs", "training": {"epochs": 1}}
    compare = {**TINY_COMPARE, "designs": [design], "configurations": {"short": ablation}}
    _, configurations, fold_table, _, baselines, fold_metrics, reproduction, histories, *_ = (
        compared_tiny(designs, compare)
    )
    folds = sorted(set(fold_table["fold"]))
    keys = fold_metrics.groupby("configuration")[["fold", "seed"]].apply(
        lambda rows: sorted(map(tuple, rows.to_numpy()))
    )
    assert keys[design] == keys["short"] == [(f, s) for f in folds for s in (1, 2)]
    assert sorted(set(baselines["fold"])) == folds
    # the reproduction members belong to designs only, one per seed
    assert reproduction[["configuration", "seed"]].to_numpy().tolist() == [[design, 1], [design, 2]]
    assert set(histories["fold"]) == {*folds, "reproduction"}
    assert set(histories.loc[histories["configuration"] == "short", "fold"]) == set(folds)
    verdicts = judge_comparison(fold_metrics, baselines, configurations, compare)
    ablation_rows = verdicts[verdicts["family"] == f"short vs {design}"]
    assert not ablation_rows.empty
    assert set(verdicts["verdict"]) <= {"better", "worse", "no detectable difference", "identical"}


def test_the_same_comparison_twice_gives_the_same_fold_metrics():
    # Same config and seeds => the same numbers, through the real nodes in memory (the
    # integration tier runs the whole pipeline once only).
    designs = _designs()
    compare = {**TINY_COMPARE, "designs": [next(iter(designs))]}
    first, second = (compared_tiny(designs, compare) for _ in range(2))
    pd.testing.assert_frame_equal(first[5], second[5])  # fold metrics
    pd.testing.assert_frame_equal(first[4], second[4])  # baselines
    assert first[5]["generation_rms_db"].notna().any()


def test_comparisons_pair_each_configuration_with_the_baselines_that_have_the_metric():
    baselines = pd.DataFrame(
        {
            "configuration": ["lda", "mean_preset"],
            "fold": ["f", "f"],
            "seed": [-1, -1],
            "silhouette": [0.3, np.nan],
            "generation_rms_db": [np.nan, 1.5],
        }
    )
    configurations = {
        "log2": {"design": "log2"},
        "ablation": {"design": "log2"},
    }
    pairs = {
        (c["configuration"], c["against"], c["metric"], c["family"])
        for c in comparisons(configurations, baselines)
    }
    assert ("log2", "lda", "silhouette", "log2 · separation") in pairs
    assert ("log2", "mean_preset", "generation_rms_db", "log2 · generation") in pairs
    assert ("log2", "mean_preset", "silhouette", "log2 · separation") not in pairs
    assert ("ablation", "log2", "silhouette", "ablation vs log2") in pairs


def test_every_other_design_is_judged_against_the_reference_design():
    baselines = pd.DataFrame(
        {"configuration": ["lda"], "fold": ["f"], "seed": [-1], "silhouette": [0.3]}
    )
    configurations = {
        "log1": {"design": "log1"},
        "log2": {"design": "log2"},
        "vae2": {"design": "vae2"},
        "ablation": {"design": "log2"},
    }
    pairs = {
        (c["configuration"], c["against"], c["family"])
        for c in comparisons(configurations, baselines, "log2")
        if c["metric"] == "silhouette"
    }
    assert ("vae2", "log2", "vae2 vs log2") in pairs
    assert ("log1", "log2", "log1 vs log2") in pairs
    assert not any(c == "log2" and a == "log2" for c, a, _ in pairs)
    assert ("ablation", "log2", "ablation vs log2") in pairs  # its design, as before
    # A reference left out of compare.designs: no reference verdicts, nothing else lost.
    without = [c for c in comparisons({"vae2": {"design": "vae2"}}, baselines, "log2")]
    assert {c["against"] for c in without} == {"lda"}


def test_a_metric_added_to_the_evaluation_reaches_run_metrics_and_compare_summary(monkeypatch):
    original = ev.flat_metrics
    monkeypatch.setattr(
        ev, "flat_metrics", lambda *a, **k: {**original(*a, **k), "new_metric": 0.25}
    )
    # a new metric is one registry entry (an undeclared name is refused by the summary)
    monkeypatch.setitem(
        REGISTRY,
        "new_metric",
        Metric("new_metric", "a test metric", "higher", "", "every test row", (EVALUATION,)),
    )
    designs = _designs()
    design = next(iter(designs))
    compare = {**TINY_COMPARE, "designs": [design]}
    (
        settings,
        configurations,
        fold_table,
        _,
        baselines,
        fold_metrics,
        reproduction,
        histories,
        examples,
        _,
    ) = compared_tiny(designs, compare)
    n_members = len(fold_metrics)
    summary = summarise_comparison(fold_metrics, baselines, compare)
    (row,) = summary[summary["metric"] == "new_metric"].itertuples()
    assert (row.configuration, row.mean, row.n_folds, row.n_seeds) == (design, 0.25, 2, 2)
    verdicts = judge_comparison(fold_metrics, baselines, configurations, compare)
    metrics = comparison_metrics(summary, verdicts, fold_metrics, baselines, reproduction)
    assert metrics[f"{design}.new_metric.mean"]["value"] == 0.25
    assert metrics[f"{design}.reproduction.new_metric.mean"]["value"] == 0.25
    runs = seed_runs(fold_metrics, configurations)
    assert runs["new_metric"].tolist() == [0.25] * n_members
    assert runs["param.design"].tolist() == [design] * n_members
    assert runs["param.training.epochs"].tolist() == ["2"] * n_members
    assert runs["param.seed"].tolist() == ["1", "2"] * (n_members // 2)
    assert set(runs["param.fold"]) == set(fold_table["fold"])
    assert set(histories["seed"]) == {1, 2}
    assert set(examples[design]) >= {"presets", "morph", "latent", "history", "wall_s", "fold"}
    # The same metric in a design's run: the evaluation pipeline's nodes.
    assignment, _ = split_by_contributor(
        settings, {"fractions": {"train": 0.6, "validation": 0.2, "test": 0.2}, "seed": 0}
    )
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


def test_a_design_and_ablations_that_change_only_member_fields_share_one_ensemble():
    designs = _designs()
    compare = project_parameters("compare")["compare"]
    configurations = configurations_of(
        designs,
        {
            **compare,
            "configurations": {
                **compare["configurations"],
                "log2_small_batches": {
                    "design": "log2",
                    "label": "Log 2 with batches of 16",
                    "training": {"batch_size": 16},
                },
            },
        },
    )
    configs = {n: TrainingConfig.from_dict(c["training"]) for n, c in configurations.items()}
    families = ensembles(configs)
    assert sorted(name for family in families for name in family) == sorted(configurations)
    together = next(family for family in families if "log2" in family)
    # the schedule and weight ablations ride along; a new batch size cannot
    assert {"log2_fixed_contrastive_weight", "log2_no_lr_schedule"} <= set(together)
    assert "log2_small_batches" not in together
    assert ["log2_small_batches"] in families
    assert not set(together) & {"log1", "log1_consistent_units"}
    # the designs beyond Log 2: another head in normalised space and the perceptual loss
    # ride along; a β-VAE (another latent) trains apart, each latent size on its own
    assert {"log2_separate_heads", "log2_perceptual"} <= set(together)
    assert ["vae2"] in families
    assert ["vae32", "vae32_contrastive"] in families  # the contrastive weights: member fields


def test_strongest_baselines_are_chosen_on_validation_parts_and_skip_empty_ones():
    settings = tiny_settings()
    fold_table = make_folds(settings, TINY_COMPARE)
    contexts = fit_validation_folds(
        fit_folds(settings, fold_table, SMALL_EVALUATION), settings, fold_table
    )
    designs = _designs()
    chosen = strongest_baselines(contexts, designs)
    assert chosen
    assert not set(chosen.values()) & {"mean_curve", "held_out_half"}  # references, not rivals
    assert chosen["reconstruction_rms_db.mean"] == "pca_reconstruction"
    empty = {fold: replace(c, test=c.test.iloc[:0]) for fold, c in contexts.items()}
    assert strongest_baselines(empty, designs) == {}
