import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from neural_eq_morphing.eq.normalisers import (
    IdentityNormaliser,
    MinMaxNormaliser,
    ZScoreNormaliser,
)
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.models.modules import SemanticEQModel
from neural_eq_morphing.pipelines.evaluation.nodes import (
    check_training_health,
    evaluate_clustering,
    evaluate_generation,
    evaluate_ranges,
    evaluate_reconstruction,
    generate_presets,
    morph_table,
    summarise_evaluation,
    term_centroids,
)
from neural_eq_morphing.pipelines.evaluation.plots import (
    plot_latent_map,
    plot_morph,
    plot_term_curves,
    plot_training_curves,
)
from neural_eq_morphing.pipelines.training.nodes import embed_settings
from tests.conftest import random_settings

PARAMS = list(PARAMETER_NAMES)
EVALUATION = {
    "seed": 1,
    "n_random_latents": 200,
    "interpolation_step": 0.25,
    "min_test_rows": 3,
    "morph": ["warm", "bright"],
    "morph_alphas": [0.0, 0.5, 1.0],
    "health_window": 2,
    "n_worst": 3,
    "response": {"n_points": 32, "f_min": 20.0, "f_max": 20000.0},
}


@pytest.fixture
def data():
    """Plug-in settings, splits and Log 2 tables for 3 terms; an untrained Log 2 model."""
    rng = np.random.default_rng(0)
    settings = pd.DataFrame(random_settings(rng, 60), columns=PARAMS)
    settings.insert(0, "term", ["warm", "bright", "airy"] * 20)
    settings.insert(0, "contributor_id", [f"c{i % 6:04d}" for i in range(60)])
    settings.insert(0, "entry_id", np.arange(60))
    split = np.where(
        np.arange(60) < 36, "train", np.where(np.arange(60) < 48, "validation", "test")
    )
    assignment = settings[["entry_id", "contributor_id", "term"]].assign(split=split)
    normaliser = MinMaxNormaliser.from_plugin_limits()
    normalised = settings.copy()
    normalised[PARAMS] = normaliser.transform(settings[PARAMS].to_numpy())
    tables = [
        normalised[split == s].reset_index(drop=True) for s in ("train", "validation", "test")
    ]
    model = SemanticEQModel("log2", seed=0).eval()
    return {
        "settings": settings,
        "assignment": assignment,
        "normaliser": normaliser.to_dict(),
        "tables": tables,
        "model": model,
        "latent": embed_settings(model, *tables),
    }


def test_log2_ranges_are_all_valid_on_every_set(data):
    centroids = term_centroids(data["latent"])
    assert sorted(centroids["term"]) == ["airy", "bright", "warm"]
    assert centroids["n_rows"].tolist() == [12, 12, 12]
    report = evaluate_ranges(
        data["model"], data["normaliser"], data["tables"][2], centroids, EVALUATION
    )
    assert {name: r["n_settings"] for name, r in report.items()} == {
        "test_reconstructions": 12,
        "term_centroids": 3,
        "interpolations": 3 * 3,  # 3 pairs, interior alphas 0.25, 0.5, 0.75
        "random_latents": 200,
    }
    assert all(r["valid_share"] == 1.0 for r in report.values())


def test_zscore_decoding_of_a_log1_model_goes_out_of_range(data):
    model = SemanticEQModel("log1", seed=0).eval()
    normaliser = ZScoreNormaliser.fit(data["settings"][PARAMS].to_numpy()).to_dict()
    tables = data["tables"]
    centroids = term_centroids(embed_settings(model, *tables))
    report = evaluate_ranges(model, normaliser, tables[2], centroids, EVALUATION)
    freq = report["random_latents"]["by_kind"]["freq"]
    assert freq < 0.5  # Hz-valued outputs read as z-scores
    assert report["random_latents"]["by_parameter"]["high_shelf_freq_hz"]["max"] > 1e5
    with pytest.raises(ValueError, match="strict_ranges"):
        summarise_evaluation(report, {}, {}, {}, {}, strict_ranges=True)
    metrics, flat = summarise_evaluation(report, {}, {}, {}, {}, strict_ranges=False)
    assert metrics["range_validity"]["random_latents"]["worst"]
    assert flat["eval.range_validity.random_latents.by_kind.freq"] == {"value": freq, "step": 0}


def test_a_decoder_in_plug_in_units_is_decoded_without_the_zscore_inverse(data):
    # Log 1 trained with its loss in consistent units: heads give dB / Hz / Q directly.
    model = SemanticEQModel("log1", seed=0).eval()
    features = ZScoreNormaliser.fit(data["settings"][PARAMS].to_numpy())
    tables = []
    for table in data["tables"]:
        plug_in = data["settings"].set_index("entry_id").loc[table["entry_id"], PARAMS]
        copy = table.copy()
        copy[PARAMS] = features.transform(plug_in.to_numpy())
        tables.append(copy)
    centroids = term_centroids(embed_settings(model, *tables))
    identity = IdentityNormaliser().to_dict()
    report = evaluate_ranges(model, identity, tables[2], centroids, EVALUATION)
    assert all(r["valid_share"] == 1.0 for r in report.values())  # bounded heads
    result = evaluate_reconstruction(model, features.to_dict(), identity, tables[2], EVALUATION)
    assert result["normalised_mse"] < 100  # compared in z-score space, not dB vs z


def test_clustering_reports_latent_and_baseline_for_both_protocols(data):
    result = evaluate_clustering(data["latent"], *data["tables"], EVALUATION)
    for protocol, rows in (("in_sample", 60), ("held_out", 12)):
        for space in ("latent", "baseline"):
            scores = result[protocol][space]
            assert scores["n_rows"] == rows
            assert -1.0 <= scores["silhouette"] <= 1.0
            assert scores["davies_bouldin"] > 0


def test_clustering_separates_well_separated_latents(data):
    latent = data["latent"].copy()
    columns = [c for c in latent.columns if c.startswith("latent_")]
    codes = latent["term"].map({"warm": -0.9, "bright": 0.0, "airy": 0.9}).to_numpy()
    latent[columns] = codes[:, None] + 0.01 * np.random.default_rng(0).random((60, len(columns)))
    result = evaluate_clustering(latent, *data["tables"], EVALUATION)
    assert result["in_sample"]["latent"]["silhouette"] > 0.9
    assert (
        result["in_sample"]["latent"]["silhouette"] > result["in_sample"]["baseline"]["silhouette"]
    )


def test_reconstruction_error_of_an_untrained_model_is_positive_and_summarised(data):
    normaliser = data["normaliser"]
    result = evaluate_reconstruction(
        data["model"], normaliser, normaliser, data["tables"][2], EVALUATION
    )
    assert result["n_rows"] == 12
    assert result["normalised_mse"] > 0
    summary = result["response_rms_db"]
    assert 0 < summary["median"] <= summary["p95"]


def test_presets_morph_and_generation(data):
    centroids = term_centroids(data["latent"])
    presets = generate_presets(data["model"], data["normaliser"], centroids)
    assert set(presets["term"]) == {"warm", "bright", "airy"}
    assert presets["valid"].all()
    morph = morph_table(data["model"], data["normaliser"], centroids, EVALUATION)
    assert morph["alpha"].tolist() == [0.0, 0.5, 1.0]
    warm = presets.set_index("term").loc["warm", PARAMS].to_numpy(float)
    np.testing.assert_allclose(morph.loc[0, PARAMS].to_numpy(float), warm, rtol=1e-5)
    with pytest.raises(ValueError, match="no centroid"):
        morph_table(
            data["model"], data["normaliser"], centroids, {**EVALUATION, "morph": ["warm", "x"]}
        )
    generation = evaluate_generation(presets, data["settings"], data["assignment"], EVALUATION)
    assert set(generation["per_term"]) == {"warm", "bright", "airy"}
    assert all(v["n_test_rows"] == 4 for v in generation["per_term"].values())
    assert generation["mean_rms_db"] == pytest.approx(
        np.mean([v["rms_db"] for v in generation["per_term"].values()])
    )


def test_training_health():
    history = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_contrastive": [4.0, 3.8, 3.1, 3.0]})
    health = check_training_health(history, EVALUATION)
    assert health == {"contrastive_first": 3.9, "contrastive_last": 3.05, "contrastive_fell": True}
    rising = history.assign(train_contrastive=[3.0, 3.1, 3.8, 4.0])
    assert check_training_health(rising, EVALUATION)["contrastive_fell"] is False
    too_short = check_training_health(history.head(3), EVALUATION)
    assert too_short["contrastive_fell"] is None


def test_plots_are_figures_with_the_expected_titles(data):
    centroids = term_centroids(data["latent"])
    presets = generate_presets(data["model"], data["normaliser"], centroids)
    morph = morph_table(data["model"], data["normaliser"], centroids, EVALUATION)
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
        "generated EQ per term": plot_term_curves(presets, data["settings"], "Log 2", EVALUATION),
        "warm → bright morph": plot_morph(morph, "Log 2", EVALUATION),
        "latent space (PCA)": plot_latent_map(data["latent"], "Log 2"),
        "training curves": plot_training_curves(history, "Log 2"),
    }
    for expected, figure in figures.items():
        assert isinstance(figure, Figure)
        assert expected in figure.get_suptitle() + " ".join(a.get_title() for a in figure.axes)
