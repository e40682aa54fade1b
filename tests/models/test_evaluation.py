import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.eq.normalisers import IdentityNormaliser, ZScoreNormaliser
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.models import evaluation as ev
from neural_eq_morphing.models.evaluation import (
    clustering,
    embed_settings,
    evaluate_model,
    generated_presets,
    generation,
    morph_table,
    range_validity,
    reconstruction,
    term_centroids,
    training_health,
)
from neural_eq_morphing.models.network import SemanticEQModel
from tests.conftest import SMALL_EVALUATION, falling_history

PARAMS = list(PARAMETER_NAMES)


def test_log2_ranges_are_all_valid_on_every_set(evaluation_data):
    centroids = term_centroids(evaluation_data["latent"])
    assert sorted(centroids["term"]) == ["airy", "bright", "warm"]
    assert centroids["n_rows"].tolist() == [12, 12, 12]
    report = range_validity(
        evaluation_data["model"],
        evaluation_data["normaliser"],
        evaluation_data["tables"][2],
        centroids,
        SMALL_EVALUATION,
    )
    assert {name: r["n_settings"] for name, r in report.items()} == {
        "test_reconstructions": 12,
        "term_centroids": 3,
        "interpolations": 3 * 3,  # 3 pairs, interior alphas 0.25, 0.5, 0.75
        "random_latents": 200,
    }
    assert all(r["valid_share"] == 1.0 for r in report.values())


def test_zscore_decoding_of_a_log1_model_goes_out_of_range(evaluation_data):
    model = SemanticEQModel("plugin_units", seed=0).eval()
    normaliser = ZScoreNormaliser.fit(evaluation_data["settings"][PARAMS].to_numpy()).to_dict()
    tables = evaluation_data["tables"]
    centroids = term_centroids(embed_settings(model, tables))
    report = range_validity(model, normaliser, tables[2], centroids, SMALL_EVALUATION)
    freq = report["random_latents"]["by_kind"]["freq"]
    assert freq < 0.5  # Hz-valued outputs read as z-scores
    assert report["random_latents"]["by_parameter"]["high_shelf_freq_hz"]["max"] > 1e5
    assert report["random_latents"]["worst"]
    assert ev.out_of_range_sets({"range_validity": report})["random_latents"]


def test_a_decoder_in_plug_in_units_is_decoded_without_the_zscore_inverse(evaluation_data):
    # Log 1 trained with its loss in consistent units: heads give dB / Hz / Q directly.
    model = SemanticEQModel("plugin_units", seed=0).eval()
    features = ZScoreNormaliser.fit(evaluation_data["settings"][PARAMS].to_numpy())
    tables = []
    for table in evaluation_data["tables"]:
        plug_in = evaluation_data["settings"].set_index("entry_id").loc[table["entry_id"], PARAMS]
        copy = table.copy()
        copy[PARAMS] = features.transform(plug_in.to_numpy())
        tables.append(copy)
    centroids = term_centroids(embed_settings(model, tables))
    identity = IdentityNormaliser().to_dict()
    report = range_validity(model, identity, tables[2], centroids, SMALL_EVALUATION)
    assert all(r["valid_share"] == 1.0 for r in report.values())  # bounded heads
    result = reconstruction(model, features.to_dict(), identity, tables[2], SMALL_EVALUATION)
    assert result["normalised_mse"] < 100  # compared in z-score space, not dB vs z


def test_clustering_reports_latent_and_baseline_for_both_protocols(evaluation_data):
    result = clustering(evaluation_data["latent"], evaluation_data["tables"], SMALL_EVALUATION)
    for protocol, rows in (("in_sample", 60), ("held_out", 12)):
        for space in ("latent", "baseline"):
            scores = result[protocol][space]
            assert scores["n_rows"] == rows
            assert -1.0 <= scores["silhouette"] <= 1.0
            assert scores["davies_bouldin"] > 0


def test_clustering_separates_well_separated_latents(evaluation_data):
    latent = evaluation_data["latent"].copy()
    columns = [c for c in latent.columns if c.startswith("latent_")]
    codes = latent["term"].map({"warm": -0.9, "bright": 0.0, "airy": 0.9}).to_numpy()
    latent[columns] = codes[:, None] + 0.01 * np.random.default_rng(0).random((60, len(columns)))
    result = clustering(latent, evaluation_data["tables"], SMALL_EVALUATION)
    assert result["in_sample"]["latent"]["silhouette"] > 0.9
    assert (
        result["in_sample"]["latent"]["silhouette"] > result["in_sample"]["baseline"]["silhouette"]
    )


def test_reconstruction_error_of_an_untrained_model_is_positive_and_summarised(evaluation_data):
    normaliser = evaluation_data["normaliser"]
    result = reconstruction(
        evaluation_data["model"],
        normaliser,
        normaliser,
        evaluation_data["tables"][2],
        SMALL_EVALUATION,
    )
    assert result["n_rows"] == 12
    assert result["normalised_mse"] > 0
    summary = result["response_rms_db"]
    assert 0 < summary["median"] <= summary["p95"]


def test_presets_morph_and_generation(evaluation_data):
    centroids = term_centroids(evaluation_data["latent"])
    presets = generated_presets(evaluation_data["model"], evaluation_data["normaliser"], centroids)
    assert set(presets["term"]) == {"warm", "bright", "airy"}
    assert presets["valid"].all()
    morph = morph_table(
        evaluation_data["model"], evaluation_data["normaliser"], centroids, SMALL_EVALUATION
    )
    assert morph["alpha"].tolist() == [0.0, 0.5, 1.0]
    warm = presets.set_index("term").loc["warm", PARAMS].to_numpy(float)
    np.testing.assert_allclose(morph.loc[0, PARAMS].to_numpy(float), warm, rtol=1e-5)
    with pytest.raises(ValueError, match="no centroid"):
        morph_table(
            evaluation_data["model"],
            evaluation_data["normaliser"],
            centroids,
            {**SMALL_EVALUATION, "morph": ["warm", "x"]},
        )
    test_ids = evaluation_data["tables"][2]["entry_id"]
    test_settings = evaluation_data["settings"][
        evaluation_data["settings"]["entry_id"].isin(test_ids)
    ]
    train_terms = evaluation_data["tables"][0]["term"]
    result = generation(presets, test_settings, train_terms, SMALL_EVALUATION)
    assert set(result["per_term"]) == {"warm", "bright", "airy"}
    assert all(v["n_test_rows"] == 4 for v in result["per_term"].values())
    assert result["mean_rms_db"] == pytest.approx(
        np.mean([v["rms_db"] for v in result["per_term"].values()])
    )
    # the protocol's eligibility: a term without enough training rows is not averaged in
    few = generation(presets, test_settings, train_terms[train_terms != "airy"], SMALL_EVALUATION)
    assert few["mean_rms_db"] == pytest.approx(
        np.mean([result["per_term"][t]["rms_db"] for t in ("warm", "bright")])
    )


def test_training_health():
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "train_contrastive": [4.0, 3.8, 3.1, 3.0],
            "contrastive_weight": [0.1, 0.2, 0.3, 0.4],
        }
    )
    health = training_health(history, SMALL_EVALUATION)
    assert health == {"contrastive_first": 3.9, "contrastive_last": 3.05, "contrastive_fell": True}
    rising = history.assign(train_contrastive=[3.0, 3.1, 3.8, 4.0])
    assert training_health(rising, SMALL_EVALUATION)["contrastive_fell"] is False
    too_short = training_health(history.head(3), SMALL_EVALUATION)
    assert too_short["contrastive_fell"] is None
    # Trained without the contrastive term (a β-VAE): nothing to judge.
    untrained = history.assign(contrastive_weight=0.0)
    assert training_health(untrained, SMALL_EVALUATION)["contrastive_fell"] is None


def test_evaluate_model_gives_every_metric_its_one_name(evaluation_data):
    history = falling_history()
    result = evaluate_model(
        evaluation_data["model"],
        evaluation_data["normaliser"],
        evaluation_data["normaliser"],
        evaluation_data["tables"],
        evaluation_data["settings"],
        history,
        SMALL_EVALUATION,
    )
    metrics = result.metrics
    # The parts agree with the functions evaluate_model is made of.
    assert metrics["silhouette.held_out.latent"] == pytest.approx(
        result.details["clustering"]["held_out"]["latent"]["silhouette"]
    )
    assert metrics["valid_share.random_latents"] == 1.0
    assert metrics["generation_rms_db"] == result.details["generation"]["mean_rms_db"]
    assert metrics["final_train_loss"] == history["train_loss"].iloc[-1]
    warm = result.generated_presets.set_index("term").loc["warm"]
    assert metrics["preset.warm.low_shelf_gain_db"] == pytest.approx(warm["low_shelf_gain_db"])
    assert metrics["contrastive_fell"] == 1.0
    assert all(isinstance(value, float) for value in metrics.values())
    # Too few epochs for a verdict: NaN in the metrics, null in the JSON document.
    short = evaluate_model(
        evaluation_data["model"],
        evaluation_data["normaliser"],
        evaluation_data["normaliser"],
        evaluation_data["tables"],
        evaluation_data["settings"],
        history.head(3),
        SMALL_EVALUATION,
    )
    assert np.isnan(short.metrics["contrastive_fell"])
    assert short.document()["metrics"]["contrastive_fell"] is None
    assert set(short.document()) == {"metrics", *short.details}
