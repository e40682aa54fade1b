"""The protocol's baselines and metrics: recomputed independently, and sanity on fixtures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETER_NAMES, PARAMETERS, UPPER_LIMITS
from neural_eq_morphing.eq.response import clamped_response_db
from neural_eq_morphing.models.distributions import distribution_scores
from neural_eq_morphing.models.folds import contributor_folds, fold_assignment
from neural_eq_morphing.models.metrics import PROTOCOL_METRICS
from neural_eq_morphing.models.protocol import (
    baseline_metrics,
    fold_context,
    morph_metrics,
    split_half_floor,
)
from tests.conftest import project_parameters

PARAMS = list(PARAMETER_NAMES)
EVALUATION = project_parameters("evaluation")["evaluation"]
FOLDS = project_parameters("compare")["compare"]["folds"]


def _log_minmax(settings: np.ndarray) -> np.ndarray:
    """Log 2's normalisation written out again: log10 for frequency and Q, then min-max."""
    logged = np.array([p.kind in ("freq", "q") for p in PARAMETERS])
    low = np.where(logged, np.log10(np.where(logged, LOWER_LIMITS, 1.0)), LOWER_LIMITS)
    high = np.where(logged, np.log10(np.where(logged, UPPER_LIMITS, 1.0)), UPPER_LIMITS)
    values = np.where(logged, np.log10(np.where(logged, settings, 1.0)), settings)
    return (values - low) / (high - low)


@pytest.mark.integration
def test_probe_auc_lda_silhouette_and_mean_preset_error_match_an_independent_computation(
    real_descriptor_settings,
):
    settings = real_descriptor_settings
    table = contributor_folds(settings, FOLDS)
    fold = "loco-c0135" if "loco-c0135" in set(table["fold"]) else table["fold"].iloc[0]
    context = fold_context(settings, fold_assignment(table, settings, fold), EVALUATION)
    project = baseline_metrics(context, latent_dim=32)

    # The fold's rows, from the fold table alone.
    parts = table[table["fold"] == fold].set_index("contributor_id")["part"]
    part = settings["contributor_id"].map(parts)
    train, test = settings[part == "train"], settings[part == "test"]
    pair = list(EVALUATION["morph"])
    x_train, x_test = _log_minmax(train[PARAMS].to_numpy()), _log_minmax(test[PARAMS].to_numpy())
    in_train, in_test = train["term"].isin(pair).to_numpy(), test["term"].isin(pair).to_numpy()
    y_train, y_test = train["term"].to_numpy()[in_train], test["term"].to_numpy()[in_test]

    # Raw-parameter probe AUC: standardise on the training pair rows, logistic regression.
    scaler = StandardScaler().fit(x_train[in_train])
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train[in_train]), y_train)
    scores = probe.predict_proba(scaler.transform(x_test[in_test]))[
        :, list(probe.classes_).index(pair[0])
    ]
    auc = roc_auc_score(y_test == pair[0], scores)
    assert project["parameters"]["probe_auc"] == pytest.approx(auc, abs=1e-6)

    # LDA silhouette: LDA fitted on the training pair rows, silhouette of the test pair rows.
    lda = LinearDiscriminantAnalysis().fit(x_train[in_train], y_train)
    silhouette = silhouette_score(lda.transform(x_test[in_test]), y_test)
    assert project["lda"]["silhouette"] == pytest.approx(silhouette, abs=1e-6)

    # Mean-preset generation error: each eligible term's mean training setting (averaged
    # in the normalised space) against the mean dB curve of its test rows; RMS over the
    # grid, mean over the terms.
    counts = test["term"].value_counts()
    terms = sorted(counts[counts >= EVALUATION["min_test_rows"]].index)
    response = EVALUATION["response"]
    errors = []
    logged = np.array([p.kind in ("freq", "q") for p in PARAMETERS])
    for term in terms:
        mean = x_train[(train["term"] == term).to_numpy()].mean(axis=0)
        low = np.where(logged, np.log10(np.where(logged, LOWER_LIMITS, 1.0)), LOWER_LIMITS)
        high = np.where(logged, np.log10(np.where(logged, UPPER_LIMITS, 1.0)), UPPER_LIMITS)
        scaled = low + mean * (high - low)
        preset = np.where(logged, 10.0**scaled, scaled)
        curve = clamped_response_db(preset[None, :], **response)[0]
        target = clamped_response_db(test.loc[test["term"] == term, PARAMS].to_numpy(), **response)
        errors.append(np.sqrt(np.mean((curve - target.mean(axis=0)) ** 2)))
    assert project["mean_preset"]["generation_rms_db"] == pytest.approx(np.mean(errors), abs=1e-6)
    assert project["mean_preset"]["generation_skill"] == 0.0


def _settings(rng: np.random.Generator, n: int, gain: float, term: str, who: str) -> pd.DataFrame:
    values = rng.uniform(LOWER_LIMITS, UPPER_LIMITS, (n, len(PARAMS)))
    gains = [i for i, p in enumerate(PARAMETERS) if p.kind == "gain"]
    values[:, gains] = np.clip(gain + rng.normal(0, 1.0, (n, len(gains))), -12, 12)
    frame = pd.DataFrame(values, columns=PARAMS)
    frame.insert(0, "term", term)
    frame.insert(0, "contributor_id", [f"{who}{i % 6}" for i in range(n)])
    frame.insert(0, "entry_id", [f"{who}{term}{i}" for i in range(n)])
    return frame


@pytest.fixture
def separable_fold():
    rng = np.random.default_rng(0)
    train = pd.concat(
        [_settings(rng, 60, 6.0, "warm", "a"), _settings(rng, 60, -6.0, "bright", "b")]
    )
    test = pd.concat(
        [_settings(rng, 30, 6.0, "warm", "c"), _settings(rng, 30, -6.0, "bright", "d")]
    )
    settings = pd.concat([train, test], ignore_index=True)
    assignment = settings[["entry_id"]].assign(split=["train"] * len(train) + ["test"] * len(test))
    return fold_context(settings, assignment, {**EVALUATION, "n_random_latents": 200})


def test_baselines_separate_separable_terms_and_the_flat_eq_generates_nothing(separable_fold):
    metrics = baseline_metrics(separable_fold, latent_dim=32)
    assert metrics["lda"]["probe_auc"] > 0.99
    assert metrics["lda"]["silhouette"] > 0.5
    assert metrics["flat"]["generation_rms_db"] > metrics["mean_preset"]["generation_rms_db"]
    assert metrics["flat"]["pair_distance_ratio"] == 0.0
    # the unrealisable mean curve is the floor of every realisable generator
    floor = metrics["mean_curve"]["generation_rms_db"]
    assert all(
        metrics[g]["generation_rms_db"] >= floor - 1e-9
        for g in ("mean_preset", "medoid", "least_squares_preset", "flat")
    )
    assert metrics["pca_reconstruction"]["reconstruction_rms_db.mean"] < 1e-6  # 13 of 13
    for values in metrics.values():
        assert set(values) <= set(PROTOCOL_METRICS)


def test_an_even_morph_scores_one_and_a_jump_scores_higher():
    response = EVALUATION["response"]
    even = np.linspace(0, 1, 21)[:, None] * np.linspace(-6, 6, response["n_points"])[None, :]
    assert morph_metrics(even, response) == {
        "morph_step_ratio": pytest.approx(1.0),
        "morph_monotonic_share": 1.0,
    }
    jump = even.copy()
    jump[10:] = jump[-1]
    assert morph_metrics(jump, response)["morph_step_ratio"] > 5


def test_distribution_references_rank_as_they_must(separable_fold):
    metrics = baseline_metrics(separable_fold, latent_dim=32)
    real, point = metrics["held_out_half"], metrics["mean_preset"]
    # real held-out settings against the other half: no distance, full recall
    assert real["energy_distance_db"] < metrics["resampled_presets"]["energy_distance_db"] + 0.5
    assert real["knn_recall"] > 0.8
    # a point mass at the mean preset covers almost nothing and recalls nothing
    assert point["knn_recall"] == 0.0
    assert point["energy_distance_db"] > real["energy_distance_db"]
    assert point["knn_coverage"] < real["knn_coverage"]
    assert point["morph_energy_distance_db"] > real["morph_energy_distance_db"]
    assert np.isfinite(real["generation_floor_db"])
    assert real["generation_floor_db"] > 0


def test_distribution_scores_are_zero_for_one_distribution_and_grow_with_a_shift():
    rng = np.random.default_rng(1)
    target = rng.normal(0.0, 1.0, (200, 16))
    same = distribution_scores(rng.normal(0.0, 1.0, (200, 16)), target, k=5)
    shifted = distribution_scores(rng.normal(1.0, 1.0, (200, 16)), target, k=5)
    point = distribution_scores(np.zeros((200, 16)), target, k=5)
    assert abs(same["energy_distance_db"]) < 0.05
    assert abs(same["mmd"]) < 0.01
    assert shifted["energy_distance_db"] > 10 * abs(same["energy_distance_db"])
    assert shifted["mmd"] > same["mmd"]
    assert same["knn_recall"] > 0.8
    assert same["knn_coverage"] > 0.8
    assert point["knn_recall"] == 0.0
    assert point["knn_precision"] == 1.0
    assert point["energy_distance_db"] > same["energy_distance_db"]


def test_the_split_half_floor_is_the_noise_of_the_mean_curve():
    response = EVALUATION["response"]
    rng = np.random.default_rng(2)
    base = np.array([(lo + hi) / 2 for lo, hi in zip(LOWER_LIMITS, UPPER_LIMITS, strict=True)])
    same = pd.DataFrame(np.repeat(base[None, :], 40, axis=0), columns=PARAMS).assign(term="warm")
    assert split_half_floor(same, ["warm"], response, 10, 0) == 0.0
    noisy = same.copy()
    gains = [c for c in PARAMS if c.endswith("gain_db")]
    noisy[gains] = rng.normal(0.0, 3.0, (40, len(gains)))
    small = split_half_floor(noisy, ["warm"], response, 50, 0)
    many = pd.concat([noisy] * 4, ignore_index=True)
    many[gains] = rng.normal(0.0, 3.0, (160, len(gains)))
    # four times the rows: half the noise of the mean (1 / sqrt(n)), within sampling error
    assert 0.35 < split_half_floor(many, ["warm"], response, 50, 0) / small < 0.7
