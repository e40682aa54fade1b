import pandas as pd
import pytest
from matplotlib.figure import Figure

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.models import evaluation as ev
from neural_eq_morphing.models.evaluation import (
    generated_presets,
    morph_table,
    term_centroids,
)
from neural_eq_morphing.pipelines.evaluation.nodes import check_ranges, evaluate, metrics_for_mlflow
from neural_eq_morphing.pipelines.evaluation.plots import (
    plot_latent_map,
    plot_morph,
    plot_term_curves,
    plot_training_curves,
)
from tests.conftest import SMALL_EVALUATION, falling_history

PARAMS = list(PARAMETER_NAMES)


def test_evaluate_node_writes_what_the_one_evaluation_measured(evaluation_data, monkeypatch):
    """A metric added to evaluate_model reaches the JSON document and the MLflow metrics."""
    original = ev.flat_metrics

    def with_new_metric(*args, **kwargs):
        return {**original(*args, **kwargs), "new_metric": 0.25}

    monkeypatch.setattr(ev, "flat_metrics", with_new_metric)
    document, latent, centroids, presets, morph = evaluate(
        evaluation_data["model"],
        evaluation_data["normaliser"],
        evaluation_data["normaliser"],
        *evaluation_data["tables"],
        evaluation_data["settings"],
        falling_history(),
        SMALL_EVALUATION,
    )
    assert document["metrics"]["new_metric"] == 0.25
    assert len(latent) == 60
    assert set(centroids["term"]) == set(presets["term"]) == {"warm", "bright", "airy"}
    assert morph["from_term"].unique().tolist() == ["warm"]
    logged = metrics_for_mlflow(document)
    assert logged["eval.new_metric"] == {"value": 0.25, "step": 0}
    assert logged["eval.silhouette.in_sample.latent"]["value"] == pytest.approx(
        document["clustering"]["in_sample"]["latent"]["silhouette"]
    )


def test_metrics_for_mlflow_skips_undefined_metrics():
    logged = metrics_for_mlflow({"metrics": {"a": 1.0, "b": None, "c": float("nan")}})
    assert logged == {"eval.a": {"value": 1.0, "step": 0}}


def test_check_ranges_fails_only_when_strict():
    worst = [{"parameter": "peak1_freq_hz", "value": 5e5}]
    document = {
        "range_validity": {
            "random_latents": {"valid_share": 0.5, "worst": worst},
            "term_centroids": {"valid_share": 1.0, "worst": []},
        }
    }
    with pytest.raises(ValueError, match=r"strict_ranges.*random_latents"):
        check_ranges(document, strict_ranges=True)
    check_ranges(document, strict_ranges=False)  # reported, not fatal
    document["range_validity"]["random_latents"]["valid_share"] = 1.0
    check_ranges(document, strict_ranges=True)


def test_plots_are_figures_with_the_expected_titles(evaluation_data):
    centroids = term_centroids(evaluation_data["latent"])
    presets = generated_presets(evaluation_data["model"], evaluation_data["normaliser"], centroids)
    morph = morph_table(
        evaluation_data["model"], evaluation_data["normaliser"], centroids, SMALL_EVALUATION
    )
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            **{c: [3.0, 2.0, 1.0] for c in ("train_loss", "val_loss", "train_reconstruction")},
            **{c: [3.0, 2.0, 1.0] for c in ("val_reconstruction", "train_contrastive")},
            "val_contrastive": [3.0, 2.5, 2.0],
            "contrastive_weight": [0.1, 0.3, 0.5],
            "learning_rate": [1e-3, 1e-3, 5e-4],
        }
    )
    figures = {
        "generated EQ per term": plot_term_curves(
            presets, evaluation_data["settings"], "Log 2", SMALL_EVALUATION
        ),
        "warm → bright morph": plot_morph(morph, "Log 2", SMALL_EVALUATION),
        "latent space (PCA)": plot_latent_map(evaluation_data["latent"], "Log 2"),
        "training curves": plot_training_curves(history, "Log 2"),
    }
    for expected, figure in figures.items():
        assert isinstance(figure, Figure)
        assert expected in figure.get_suptitle() + " ".join(a.get_title() for a in figure.axes)
