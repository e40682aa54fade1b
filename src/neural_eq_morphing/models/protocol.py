"""The cross-contributor protocol's metrics, for models and simple baselines alike; no Kedro.

Every metric here is measured on one fold (:mod:`neural_eq_morphing.models.folds`): the
baselines and probes are fitted on the fold's training part only and everything is
measured on its test part (contributors the model never saw). A model and the baselines
go through the same functions, so their numbers are comparable by construction:

* **separation** (:func:`separation_metrics`) of one representation of the settings (a
  model's latent, or a baseline: the normalised parameters, PCA, LDA) on the test rows of
  the *pair* (the morph's two terms, warm and bright): silhouette and Davies–Bouldin;
  and a **probe** (logistic regression on the standardised representation, fitted on the
  training part): pair accuracy and AUC, and macro-F1 over the terms of the test part.
* **generation** (:func:`generation_metrics`) of one *generator* (a model's decoded term
  centroids, or a baseline: the term's mean training preset, its medoid, a least-squares
  preset fitted to its mean training curve, the flat EQ, and the mean training curve
  itself as the unrealisable reference): RMS dB error against the term's mean test
  curve, skill against the mean preset, recognisability by a response-space classifier,
  the pair's separation relative to the data's, and band directions.
* **morph** (:func:`morph_metrics`): smoothness and per-band monotonicity of the response
  along the pair's morph, for a model's decoded morph and for the linear blend of the
  two mean presets.
* **distributions** (:meth:`FoldContext.distribution`): a generator's *draws* for a word
  against the word's held-out settings, in dB-curve space (energy distance, MMD, k-NN
  precision / recall / coverage, :mod:`~neural_eq_morphing.models.distributions`), with
  references on the same folds: the held-out settings themselves (one half against the
  other), resampled training presets, a per-word Gaussian in the normalised space, and the
  mean preset as a point mass; and the same for the morph's midpoints
  (:meth:`FoldContext.morph_distribution`).

Every metric's name and definition is in the registry,
:mod:`neural_eq_morphing.models.metrics`.

Responses are those of docs/design.md section 7 (:func:`~neural_eq_morphing.eq.response.
clamped_response_db`). Baselines work in the log + min-max normalised space (Log 2's
features, fitted on nothing), so they need no fitting beyond the fold's training rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    davies_bouldin_score,
    f1_score,
    roc_auc_score,
    silhouette_score,
)
from sklearn.metrics.pairwise import pairwise_distances
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neural_eq_morphing.eq.normalisers import MinMaxNormaliser
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES, PARAMETERS
from neural_eq_morphing.eq.response import clamped_response_db, frequency_grid
from neural_eq_morphing.models.distributions import distribution_scores

PARAMS = list(PARAMETER_NAMES)
GAIN_COLUMNS = [i for i, p in enumerate(PARAMETERS) if p.kind == "gain"]

#: Representations a model's latent is compared with (separation and probes).
BASELINE_REPRESENTATIONS = ("parameters", "pca_2", "pca_13_whitened", "lda")
#: Generators a model's decoded centroids are compared with; ``mean_curve`` is the
#: unrealisable reference (a curve, not a setting).
BASELINE_GENERATORS = ("mean_preset", "medoid", "least_squares_preset", "flat", "mean_curve")
#: How the report names each baseline.
BASELINE_LABELS: dict[str, str] = {
    "parameters": "normalised parameters",
    "pca_2": "PCA 2-d",
    "pca_13_whitened": "PCA 13-d whitened",
    "lda": "LDA",
    "mean_preset": "mean preset",
    "medoid": "medoid preset",
    "least_squares_preset": "least-squares preset",
    "flat": "flat EQ",
    "mean_curve": "mean training curve (unrealisable)",
    "pca_reconstruction": "PCA reconstruction",
    "held_out_half": "held-out settings, first half (real data)",
    "resampled_presets": "resampled training presets",
    "gaussian_presets": "per-word Gaussian of the training presets",
}
#: Samplers of the distribution references (``held_out_half`` is the data itself).
BASELINE_SAMPLERS = ("resampled_presets", "gaussian_presets", "mean_preset")
#: Baselines that are references, not rivals: the report's "strongest baseline" skips them.
REFERENCES = ("mean_curve", "held_out_half")
#: The distribution metrics also measured on the morph's midpoints (as ``morph_<name>``).
MORPH_DISTRIBUTION = ("energy_distance_db", "mmd", "knn_coverage")
#: Frequency bands of the band-direction metrics, in Hz: (low, high).
BANDS_HZ: dict[str, tuple[float, float]] = {
    "below_150": (0.0, 150.0),
    "low_mid": (150.0, 500.0),
    "presence": (2000.0, 6000.0),
    "above_6k": (6000.0, float("inf")),
}


def baseline_space() -> MinMaxNormaliser:
    """The normalised space of the baselines: log + min-max to the plug-in limits."""
    return MinMaxNormaliser.from_plugin_limits(("freq", "q"))


def responses(settings: np.ndarray, response: Mapping[str, Any]) -> np.ndarray:
    """DB responses ``(n, n_points)`` of settings in plug-in units (clamped to the limits)."""
    return clamped_response_db(np.asarray(settings, dtype=np.float64), **response)


# ------------------------------------------------------------------ separation and probes
def _pair_rows(terms: pd.Series, pair: Sequence[str]) -> np.ndarray:
    return terms.isin(list(pair)).to_numpy()


def fit_representations(
    train_features: np.ndarray, train_terms: pd.Series, pair: Sequence[str], seed: int
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The baseline representations, fitted on the training part's normalised features.

    Returns:
        ``{name: transform}`` for :data:`BASELINE_REPRESENTATIONS`: the features
        themselves, PCA to 2-d, PCA to 13-d whitened, and LDA fitted on the pair's
        training rows (1-d).
    """
    pair_rows = _pair_rows(train_terms, pair)
    pca_2 = PCA(n_components=2, random_state=seed).fit(train_features)
    pca_13 = PCA(n_components=train_features.shape[1], whiten=True, random_state=seed).fit(
        train_features
    )
    lda = LinearDiscriminantAnalysis().fit(
        train_features[pair_rows], train_terms[pair_rows].to_numpy()
    )
    return {
        "parameters": lambda x: np.asarray(x, dtype=np.float64),
        "pca_2": pca_2.transform,
        "pca_13_whitened": pca_13.transform,
        "lda": lda.transform,
    }


def _probe() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def separation_metrics(
    train_points: np.ndarray,
    train_terms: pd.Series,
    test_points: np.ndarray,
    test_terms: pd.Series,
    pair: Sequence[str],
) -> dict[str, float]:
    """Separation and probe metrics of one representation on one fold.

    Args:
        train_points: The representation of the training part's rows ``(n, d)``.
        train_terms: Their terms.
        test_points: The representation of the test part's rows.
        test_terms: Their terms.
        pair: The two terms of the pair (e.g. ``["warm", "bright"]``); the first is the
            positive class of the AUC.

    Returns:
        ``silhouette``, ``davies_bouldin`` (test pair rows), ``probe_accuracy``,
        ``probe_auc`` (pair probe) and ``probe_macro_f1`` (probe over every training
        term, F1 averaged over the terms present in the test part); NaN when undefined.
    """
    nan = float("nan")
    metrics = dict.fromkeys(
        ("silhouette", "davies_bouldin", "probe_accuracy", "probe_auc", "probe_macro_f1"), nan
    )
    test_pair = _pair_rows(test_terms, pair)
    train_pair = _pair_rows(train_terms, pair)
    labels = test_terms[test_pair].to_numpy()
    if len(set(labels)) == 2 and len(labels) > 2:
        metrics["silhouette"] = float(silhouette_score(test_points[test_pair], labels))
        metrics["davies_bouldin"] = float(davies_bouldin_score(test_points[test_pair], labels))
        if train_terms[train_pair].nunique() == 2:
            probe = _probe().fit(train_points[train_pair], train_terms[train_pair].to_numpy())
            positive = list(probe.classes_).index(pair[0])
            scores = probe.predict_proba(test_points[test_pair])[:, positive]
            metrics["probe_accuracy"] = float(
                accuracy_score(labels, probe.predict(test_points[test_pair]))
            )
            metrics["probe_auc"] = float(roc_auc_score(labels == pair[0], scores))
    if train_terms.nunique() >= 2:
        probe = _probe().fit(train_points, train_terms.to_numpy())
        present = sorted(set(test_terms) & set(probe.classes_))
        if present:
            metrics["probe_macro_f1"] = float(
                f1_score(
                    test_terms.to_numpy(),
                    probe.predict(test_points),
                    labels=present,
                    average="macro",
                    zero_division=0.0,
                )
            )
    return metrics


# ------------------------------------------------------------------------- generation
def eligible_terms(test_terms: pd.Series, train_terms: pd.Series, min_rows: int) -> list[str]:
    """Terms with at least ``min_rows`` rows in both the test and the training part.

    A generator is scored on these: it needs training rows to learn the term from and
    enough test rows for a stable target curve.
    """
    test, train = test_terms.value_counts(), train_terms.value_counts()
    return sorted(str(t) for t in test[test >= min_rows].index if train.get(t, 0) >= min_rows)


def _mean_presets(train: pd.DataFrame, space: MinMaxNormaliser) -> dict[str, np.ndarray]:
    """Each term's mean training setting, averaged in the normalised (log) space."""
    normalised = space.transform(train[PARAMS].to_numpy(np.float64))
    return {
        str(term): space.inverse_transform(normalised[rows.to_numpy()].mean(axis=0, keepdims=True))[
            0
        ]
        for term, rows in _term_masks(train["term"]).items()
    }


def _term_masks(terms: pd.Series) -> dict[str, pd.Series]:
    return {str(term): terms == term for term in sorted(terms.unique())}


def _least_squares_preset(
    target_curve: np.ndarray,
    start: np.ndarray,
    space: MinMaxNormaliser,
    response: Mapping[str, Any],
) -> np.ndarray:
    """The setting within the plug-in limits whose response is nearest ``target_curve``."""

    def residual(z: np.ndarray) -> np.ndarray:
        return responses(space.inverse_transform(z[None, :]), response)[0] - target_curve

    x0 = np.clip(space.transform(start[None, :])[0], 0.0, 1.0)
    fitted = least_squares(residual, x0, bounds=(0.0, 1.0), method="trf", x_scale=1.0)
    return space.inverse_transform(fitted.x[None, :])[0]


def baseline_generators(
    train: pd.DataFrame, terms: Sequence[str], response: Mapping[str, Any]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """The baseline generators' curves for ``terms``, from the training part only.

    Args:
        train: The training part's settings in plug-in units (``term`` and the 13
            parameters).
        terms: The terms to generate (each must have training rows).
        response: The response grid (``n_points``, ``f_min``, ``f_max``).

    Returns:
        The curves, ``{generator: {term: curve}}`` for :data:`BASELINE_GENERATORS`, and
        the settings behind them, ``{generator: {term: setting}}`` (the mean curve has
        none).
    """
    space = baseline_space()
    means = _mean_presets(train, space)
    settings_array = train[PARAMS].to_numpy(np.float64)
    curves = responses(settings_array, response)
    masks = _term_masks(train["term"])
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in BASELINE_GENERATORS}
    settings: dict[str, dict[str, np.ndarray]] = {
        name: {} for name in BASELINE_GENERATORS if name not in REFERENCES
    }
    for term in terms:
        if term not in masks:
            raise ValueError(f"term {term!r} has no training rows in this fold")
        rows = masks[term].to_numpy()
        term_curves, term_settings = curves[rows], settings_array[rows]
        mean_curve = term_curves.mean(axis=0)
        # RMS dB distance is the Euclidean one over sqrt(n_points): same medoid.
        distances = pairwise_distances(term_curves).sum(axis=1)
        flat = means[term].copy()
        flat[GAIN_COLUMNS] = 0.0
        settings["mean_preset"][term] = means[term]
        settings["medoid"][term] = term_settings[int(np.argmin(distances))]
        settings["least_squares_preset"][term] = _least_squares_preset(
            mean_curve, means[term], space, response
        )
        settings["flat"][term] = flat
        for name in ("mean_preset", "medoid", "least_squares_preset", "flat"):
            out[name][term] = responses(settings[name][term][None, :], response)[0]
        out["mean_curve"][term] = mean_curve
    return out, settings


#: The response classifier reads every this many points of a curve (256 -> 32 features:
#: a curve is smooth, and the fit is 20x faster).
CLASSIFIER_STRIDE = 8


class ResponseClassifier:
    """A logistic-regression term classifier on dB curves, fitted on a fold's training part.

    It reads every :data:`CLASSIFIER_STRIDE`-th point of a curve, standardised.
    """

    def __init__(self, train: pd.DataFrame, response: Mapping[str, Any]) -> None:
        curves = responses(train[PARAMS].to_numpy(np.float64), response)
        self._probe = _probe().fit(
            curves[:, ::CLASSIFIER_STRIDE], train["term"].astype(str).to_numpy()
        )
        self.classes_ = self._probe.classes_

    def predict_proba(self, curves: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` of curves on the full grid."""
        return self._probe.predict_proba(curves[:, ::CLASSIFIER_STRIDE])

    def predict(self, curves: np.ndarray) -> np.ndarray:
        """The most probable term of each curve."""
        return self._probe.predict(curves[:, ::CLASSIFIER_STRIDE])


def band_levels(curves: np.ndarray, response: Mapping[str, Any]) -> np.ndarray:
    """Mean dB of each curve in each band of :data:`BANDS_HZ`, ``(n, len(BANDS_HZ))``."""
    grid = frequency_grid(int(response["n_points"]), response["f_min"], response["f_max"])
    columns = []
    for low, high in BANDS_HZ.values():
        inside = (grid >= low) & (grid < high)
        columns.append(curves[:, inside].mean(axis=1))
    return np.stack(columns, axis=1)


def term_targets(
    test: pd.DataFrame, terms: Sequence[str], response: Mapping[str, Any]
) -> np.ndarray:
    """The mean dB curve of each term's test rows, ``(len(terms), n_points)``."""
    curves = responses(test[PARAMS].to_numpy(np.float64), response)
    return np.stack([curves[(test["term"] == t).to_numpy()].mean(axis=0) for t in terms])


def generation_metrics(
    generated: Mapping[str, np.ndarray],
    targets: np.ndarray,
    terms: Sequence[str],
    pair: Sequence[str],
    classifier: ResponseClassifier,
    reference_rms_db: float | None,
    response: Mapping[str, Any],
) -> dict[str, float]:
    """Generation metrics of one generator on one fold.

    Args:
        generated: ``{term: curve}`` of the generator (at least ``terms``).
        targets: The terms' mean test curves (:func:`term_targets`), in ``terms`` order.
        terms: The eligible terms (:func:`eligible_terms`).
        pair: The pair's two terms.
        classifier: The fold's :class:`ResponseClassifier`.
        reference_rms_db: The mean preset's ``generation_rms_db`` on this fold (for the
            skill); ``None`` gives NaN.
        response: The response grid.

    Returns:
        ``generation_rms_db``, ``generation_skill``, ``recognised_share``,
        ``recognised_probability``,
        ``pair_distance_ratio``, ``band_agreement``, ``band_error_db``; NaN when
        undefined (no eligible term; the pair not both eligible).
    """
    nan = float("nan")
    if not terms:
        return dict.fromkeys(
            (
                "generation_rms_db",
                "generation_skill",
                "recognised_share",
                "recognised_probability",
                "pair_distance_ratio",
                "band_agreement",
                "band_error_db",
            ),
            nan,
        )
    curves = np.stack([np.asarray(generated[t], dtype=np.float64) for t in terms])
    rms = np.sqrt(((curves - targets) ** 2).mean(axis=1))
    error = float(rms.mean())
    classes = list(classifier.classes_)
    probabilities = classifier.predict_proba(curves)
    recognised = [
        probabilities[i, classes.index(t)] if t in classes else 0.0 for i, t in enumerate(terms)
    ]
    predicted = classifier.predict(curves)
    ratio = nan
    if all(t in terms for t in pair):
        a, b = terms.index(pair[0]), terms.index(pair[1])
        data = np.sqrt(((targets[a] - targets[b]) ** 2).mean())
        ratio = float(np.sqrt(((curves[a] - curves[b]) ** 2).mean()) / data) if data > 0 else nan
    generated_bands, data_bands = band_levels(curves, response), band_levels(targets, response)
    return {
        "generation_rms_db": error,
        "generation_skill": 1.0 - error / reference_rms_db
        if reference_rms_db is not None and reference_rms_db > 0
        else nan,
        "recognised_share": float(np.mean(predicted == np.asarray(terms))),
        "recognised_probability": float(np.mean(recognised)),
        "pair_distance_ratio": ratio,
        "band_agreement": float(np.mean(np.sign(generated_bands) == np.sign(data_bands))),
        "band_error_db": float(np.mean(np.abs(generated_bands - data_bands))),
    }


# ------------------------------------------------------------------------------ morph
def morph_metrics(curves: np.ndarray, response: Mapping[str, Any]) -> dict[str, float]:
    """Smoothness and monotonicity of a morph given as curves along α ``(n_alphas, n_points)``.

    ``morph_step_ratio``: the largest RMS dB change between consecutive α, divided by
    the change an evenly spread morph would make per step (the endpoints' RMS distance
    over the number of steps); 1 is even, larger means a jump. ``morph_monotonic_share``:
    the share of :data:`BANDS_HZ` whose mean level never reverses along α (changes
    within 1e-6 dB count as flat).
    """
    steps = np.sqrt((np.diff(curves, axis=0) ** 2).mean(axis=1))
    span = float(np.sqrt(((curves[-1] - curves[0]) ** 2).mean()))
    even = span / (len(curves) - 1)
    levels = np.diff(band_levels(curves, response), axis=0)
    monotonic = np.all(levels >= -1e-6, axis=0) | np.all(levels <= 1e-6, axis=0)
    return {
        "morph_step_ratio": float(steps.max() / even) if even > 0 else float("nan"),
        "morph_monotonic_share": float(monotonic.mean()),
    }


def morph_alphas(step: float) -> np.ndarray:
    """α from 0 to 1 in steps of ``step`` (both ends included)."""
    count = round(1.0 / float(step))
    return np.linspace(0.0, 1.0, count + 1)


def linear_morph(start: np.ndarray, end: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Settings along the straight line between two settings in the baseline space."""
    space = baseline_space()
    a, b = space.transform(start[None, :])[0], space.transform(end[None, :])[0]
    return space.inverse_transform((1 - alphas)[:, None] * a + alphas[:, None] * b)


def blend_midpoints(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Midpoints (α = 0.5) of pairs of settings ``(n, 13)``, in the baseline space."""
    space = baseline_space()
    a = space.transform(np.atleast_2d(first))
    b = space.transform(np.atleast_2d(second))
    return space.inverse_transform(0.5 * (a + b))


# ---------------------------------------------------------------------- distributions
def _term_rng(seed: int, term: str, salt: int = 0) -> np.random.Generator:
    """A random source of one term's draws: the same for every generator and run."""
    return np.random.default_rng([int(seed), salt, *term.encode()])


def split_half_floor(
    test: pd.DataFrame, terms: Sequence[str], response: Mapping[str, Any], repeats: int, seed: int
) -> float:
    """``generation_floor_db``: the split-half noise of the held-out mean curves.

    Per term, the test rows are split at random into two halves ``repeats`` times; half
    the RMS dB between the two halves' mean curves (root mean square over the splits)
    estimates the RMS sampling noise of the full mean curve, since for independent rows
    Var(mean_A − mean_B) = 4 Var(mean) at equal halves. No generator that sees only the
    word can expect a lower error against that noisy target. The mean over ``terms``;
    NaN without terms.
    """
    values = []
    curves = responses(test[PARAMS].to_numpy(np.float64), response)
    for term in terms:
        rows = curves[(test["term"] == term).to_numpy()]
        rng = _term_rng(seed, term, salt=1)
        squares = []
        for _ in range(int(repeats)):
            order = rng.permutation(len(rows))
            half = len(rows) // 2
            a, b = rows[order[:half]].mean(axis=0), rows[order[half : 2 * half]].mean(axis=0)
            squares.append(((a - b) ** 2).mean() / 4.0)
        values.append(float(np.sqrt(np.mean(squares))))
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class Halves:
    """One word's held-out settings split in two (seeded).

    Attributes:
        first: The first half's settings in plug-in units (the real-data reference, and
            how many draws every generator makes).
        target: The second half's dB curves (what every generator is measured against).
    """

    first: np.ndarray
    target: np.ndarray


def split_halves(
    test: pd.DataFrame, terms: Sequence[str], response: Mapping[str, Any], seed: int
) -> dict[str, Halves]:
    """Each term's test rows split at random into two halves (:class:`Halves`)."""
    out = {}
    for term in terms:
        settings = test.loc[test["term"] == term, PARAMS].to_numpy(np.float64)
        order = _term_rng(seed, term, salt=2).permutation(len(settings))
        half = len(settings) // 2
        out[term] = Halves(
            first=settings[order[:half]],
            target=responses(settings[order[half:]], response),
        )
    return out


def _gaussian_draws(settings: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of a Gaussian fitted to settings in the baseline space, clipped to the limits."""
    space = baseline_space()
    points = space.transform(settings)
    covariance = np.cov(points, rowvar=False) if len(points) > 1 else np.zeros((13, 13))
    covariance = covariance + 1e-9 * np.eye(points.shape[1])
    draws = rng.multivariate_normal(points.mean(axis=0), covariance, size=int(count))
    return space.inverse_transform(np.clip(draws, 0.0, 1.0))


def baseline_draws(
    sampler: str,
    train: pd.DataFrame,
    term: str,
    count: int,
    mean_preset: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """``count`` settings of one term from a reference sampler (:data:`BASELINE_SAMPLERS`).

    ``resampled_presets``: training settings of the term drawn with replacement;
    ``gaussian_presets``: a Gaussian fitted to them in the log + min-max space, clipped to
    the plug-in limits; ``mean_preset``: the mean preset ``count`` times (a point mass).
    """
    settings = train.loc[train["term"] == term, PARAMS].to_numpy(np.float64)
    if sampler == "resampled_presets":
        return settings[rng.integers(0, len(settings), int(count))]
    if sampler == "gaussian_presets":
        return _gaussian_draws(settings, count, rng)
    if sampler == "mean_preset":
        return np.repeat(np.asarray(mean_preset, np.float64)[None, :], int(count), axis=0)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {BASELINE_SAMPLERS}")


def _mean_scores(scores: Sequence[Mapping[str, float]], names: Sequence[str]) -> dict[str, float]:
    return {
        name: float(np.nanmean([s[name] for s in scores]))
        if any(np.isfinite(s[name]) for s in scores)
        else float("nan")
        for name in names
    }


_DISTRIBUTION_NAMES = ("energy_distance_db", "mmd", "knn_precision", "knn_recall", "knn_coverage")


# --------------------------------------------------------------------- one fold, all of it
@dataclass
class FoldContext:
    """One fold's data and everything fitted on its training part, shared by all scorers.

    Attributes:
        train: The training part's settings in plug-in units (``entry_id``, ``term``, the
            13 parameters).
        test: The test part's settings in plug-in units.
        terms: The eligible terms (enough test and training rows), sorted.
        pair: The pair's two terms.
        representations: The baseline representations (:func:`fit_representations`).
        classifier: The response-space term classifier (:class:`ResponseClassifier`).
        generators: The baseline generators' curves (:func:`baseline_generators`).
        baseline_settings: The settings behind them.
        evaluation: The evaluation parameters (``response``, ``min_test_rows``,
            ``interpolation_step``, ``distribution``, ``split_half_repeats``, ``seed``).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    terms: list[str]
    pair: tuple[str, str]
    representations: dict[str, Callable[[np.ndarray], np.ndarray]]
    classifier: ResponseClassifier
    generators: dict[str, dict[str, np.ndarray]]
    baseline_settings: dict[str, dict[str, np.ndarray]]
    evaluation: Mapping[str, Any]

    @cached_property
    def targets(self) -> np.ndarray:
        """The eligible terms' mean test curves (computed once per fold)."""
        return term_targets(self.test, self.terms, self.evaluation["response"])

    @cached_property
    def reference_rms_db(self) -> float:
        """The mean preset's generation error on this fold (the skill's reference)."""
        return self.generation(self.generators["mean_preset"], None)["generation_rms_db"]

    @cached_property
    def generation_floor_db(self) -> float:
        """The split-half noise of the held-out curves (:func:`split_half_floor`)."""
        return split_half_floor(
            self.test,
            self.terms,
            self.evaluation["response"],
            int(self.evaluation["split_half_repeats"]),
            int(self.evaluation["seed"]),
        )

    @cached_property
    def distribution_terms(self) -> list[str]:
        """Terms with enough test and training rows for the distribution metrics."""
        minimum = int(self.evaluation["distribution"]["min_test_rows"])
        return eligible_terms(self.test["term"], self.train["term"], minimum)

    @cached_property
    def halves(self) -> dict[str, Halves]:
        """The distribution terms' held-out settings in two halves (:func:`split_halves`)."""
        return split_halves(
            self.test,
            self.distribution_terms,
            self.evaluation["response"],
            int(self.evaluation["seed"]),
        )

    @property
    def morph_measured(self) -> bool:
        """Whether both terms of the pair have halves (the morph's distribution is measured)."""
        return all(t in self.halves for t in self.pair)

    @cached_property
    def morph_target(self) -> np.ndarray:
        """The second halves of both terms of the pair, pooled (curves)."""
        return np.concatenate([self.halves[t].target for t in self.pair])

    @property
    def morph_count(self) -> int:
        """How many morph midpoints a generator draws (the pooled first halves' size)."""
        return sum(len(self.halves[t].first) for t in self.pair)

    def draw_count(self, term: str) -> int:
        """How many settings a generator draws for ``term`` (its first half's size)."""
        return len(self.halves[term].first)

    def distribution(self, draws: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The distribution metrics of one generator's draws ``{term: settings}``.

        Each term's draws against its second half; the mean over the distribution terms
        (NaN without any).
        """
        response, k = self.evaluation["response"], int(self.evaluation["distribution"]["k"])
        scores = [
            distribution_scores(responses(draws[term], response), self.halves[term].target, k)
            for term in self.distribution_terms
        ]
        if not scores:
            return dict.fromkeys(_DISTRIBUTION_NAMES, float("nan"))
        return _mean_scores(scores, _DISTRIBUTION_NAMES)

    def morph_distribution(self, midpoints: np.ndarray | None) -> dict[str, float]:
        """``morph_*`` distribution metrics of morph midpoints (settings) against both words."""
        names = [f"morph_{name}" for name in MORPH_DISTRIBUTION]
        if midpoints is None or not self.morph_measured:
            return dict.fromkeys(names, float("nan"))
        scores = distribution_scores(
            responses(midpoints, self.evaluation["response"]),
            self.morph_target,
            int(self.evaluation["distribution"]["k"]),
        )
        return {f"morph_{name}": scores[name] for name in MORPH_DISTRIBUTION}

    def generation(
        self, curves: Mapping[str, np.ndarray], reference: float | None
    ) -> dict[str, float]:
        """:func:`generation_metrics` of one generator's curves on this fold."""
        return generation_metrics(
            curves,
            self.targets,
            self.terms,
            self.pair,
            self.classifier,
            reference,
            self.evaluation["response"],
        )

    def normalised(self, frame: pd.DataFrame) -> np.ndarray:
        """A table's settings in the baseline space."""
        return baseline_space().transform(frame[PARAMS].to_numpy(np.float64))


def fold_context(
    settings: pd.DataFrame, assignment: pd.DataFrame, evaluation: Mapping[str, Any]
) -> FoldContext:
    """Fit everything a fold's metrics need on its training part; measure on its test part.

    Args:
        settings: The settings in plug-in units (``entry_id``, ``term``, the parameters).
        assignment: The fold as a split assignment (``entry_id``, ``split``).
        evaluation: The evaluation parameters; ``morph`` names the pair.

    Raises:
        ValueError: A term of the pair has no training rows in the fold.
    """
    split = settings["entry_id"].map(assignment.set_index("entry_id")["split"])
    train = settings[split == "train"].reset_index(drop=True)
    pair = (str(evaluation["morph"][0]), str(evaluation["morph"][1]))
    missing = [t for t in pair if not (train["term"] == t).any()]
    if missing:
        raise ValueError(f"the pair's term(s) {missing} have no training rows in this fold")
    fitted = FoldContext(
        train=train,
        test=train.iloc[:0],
        terms=[],
        pair=pair,
        representations=fit_representations(
            baseline_space().transform(train[PARAMS].to_numpy(np.float64)),
            train["term"].astype(str),
            pair,
            int(evaluation["seed"]),
        ),
        classifier=ResponseClassifier(train, evaluation["response"]),
        generators={},
        baseline_settings={},
        evaluation=evaluation,
    )
    return measured_on(fitted, settings[split == "test"])


def measured_on(context: FoldContext, rows: pd.DataFrame) -> FoldContext:
    """The same fold, fitted on the same training part, measured on other ``rows``.

    Used for a fold's validation part (contributors that neither its training nor its
    test part holds), where the strongest baselines are chosen without looking at the
    test part. Only what depends on the measured rows is computed again: the eligible
    terms and the baseline generators for them.
    """
    test = rows.reset_index(drop=True)
    evaluation = context.evaluation
    terms = eligible_terms(test["term"], context.train["term"], int(evaluation["min_test_rows"]))
    generators, baseline_settings = baseline_generators(
        context.train, terms, evaluation["response"]
    )
    return replace(
        context, test=test, terms=terms, generators=generators, baseline_settings=baseline_settings
    )


def _pair_morph(context: FoldContext) -> dict[str, float]:
    alphas = morph_alphas(context.evaluation["interpolation_step"])
    start, end = (_mean_preset_of(context, t) for t in context.pair)
    curves = responses(linear_morph(start, end, alphas), context.evaluation["response"])
    return morph_metrics(curves, context.evaluation["response"])


def _pca_reconstruction(context: FoldContext, components: int) -> float:
    train, test = context.normalised(context.train), context.normalised(context.test)
    pca = PCA(n_components=min(components, train.shape[1])).fit(train)
    restored = baseline_space().inverse_transform(pca.inverse_transform(pca.transform(test)))
    response = context.evaluation["response"]
    error = responses(restored, response) - responses(context.test[PARAMS].to_numpy(), response)
    return float(np.sqrt((error**2).mean(axis=1)).mean())


def _mean_preset_of(context: FoldContext, term: str) -> np.ndarray:
    """The term's mean preset (computed here for a term that is not generation-eligible)."""
    if term in context.baseline_settings["mean_preset"]:
        return context.baseline_settings["mean_preset"][term]
    return _mean_presets(context.train[context.train["term"] == term], baseline_space())[term]


def _sampler_metrics(context: FoldContext, sampler: str) -> dict[str, float]:
    """A reference sampler's distribution metrics and its morph midpoints' on one fold."""
    seed = int(context.evaluation["seed"])

    def draws(term: str, count: int, salt: int) -> np.ndarray:
        return baseline_draws(
            sampler,
            context.train,
            term,
            count,
            _mean_preset_of(context, term),
            _term_rng(seed, term, salt=salt),
        )

    metrics = context.distribution(
        {t: draws(t, context.draw_count(t), 3) for t in context.distribution_terms}
    )
    midpoints = None
    if context.morph_measured:
        count = context.morph_count
        midpoints = blend_midpoints(*(draws(t, count, 4) for t in context.pair))
    metrics.update(context.morph_distribution(midpoints))
    return metrics


def _held_out_half(context: FoldContext) -> dict[str, float]:
    """The real-data reference: the first halves against the second halves."""
    metrics = context.distribution({t: h.first for t, h in context.halves.items()})
    pooled = (
        np.concatenate([context.halves[t].first for t in context.pair])
        if context.morph_measured
        else None
    )
    metrics.update(context.morph_distribution(pooled))
    metrics["generation_floor_db"] = context.generation_floor_db
    return metrics


def baseline_metrics(context: FoldContext, latent_dim: int) -> dict[str, dict[str, float]]:
    """Every baseline's and reference's protocol metrics on one fold.

    Args:
        context: The fold (:func:`fold_context`).
        latent_dim: The models' latent size (the size of the PCA reconstruction baseline).

    Returns:
        ``{baseline: {metric: value}}``: the representations with separation and probe
        metrics; the generators with generation metrics (the mean preset also with the
        linear morph between the pair's mean presets, and with the distribution metrics
        of the point mass at it); ``resampled_presets`` and ``gaussian_presets`` with the
        distribution metrics; ``held_out_half`` with them and ``generation_floor_db``;
        ``pca_reconstruction`` with reconstruction.
    """
    out: dict[str, dict[str, float]] = {}
    train_features, test_features = (
        context.normalised(context.train),
        context.normalised(context.test),
    )
    for name, transform in context.representations.items():
        out[name] = separation_metrics(
            transform(train_features),
            context.train["term"].astype(str),
            transform(test_features),
            context.test["term"].astype(str),
            context.pair,
        )
    reference = context.reference_rms_db
    for name in BASELINE_GENERATORS:
        out[name] = context.generation(context.generators[name], reference)
    out["mean_preset"].update(_pair_morph(context))
    for sampler in BASELINE_SAMPLERS:
        out.setdefault(sampler, {}).update(_sampler_metrics(context, sampler))
    out["held_out_half"] = _held_out_half(context)
    out["pca_reconstruction"] = {
        "reconstruction_rms_db.mean": _pca_reconstruction(context, latent_dim)
    }
    return out


def model_metrics(
    context: FoldContext,
    train_latent: np.ndarray,
    test_latent: np.ndarray,
    generated: Mapping[str, np.ndarray],
    morph_settings: np.ndarray,
    draws: Mapping[str, np.ndarray],
    morph_midpoints: np.ndarray | None,
) -> dict[str, float]:
    """A model's protocol metrics on one fold.

    Everything but reconstruction, which
    :func:`~neural_eq_morphing.models.evaluation.evaluate_model` measures.

    Args:
        context: The fold.
        train_latent: The latent of the training part's rows (in ``context.train`` order).
        test_latent: The latent of the test part's rows (in ``context.test`` order).
        generated: The decoded term presets in plug-in units, ``{term: setting}``.
        morph_settings: Decoded settings along the pair's morph, α from 0 to 1 in steps
            of ``interpolation_step``.
        draws: The model's draws for each distribution term in plug-in units,
            ``{term: (context.draw_count(term), 13)}``
            (:mod:`~neural_eq_morphing.models.sampling`).
        morph_midpoints: Its decoded morph midpoints (``context.morph_count`` of them),
            or ``None`` when the morph's distribution is not measured on this fold.
    """
    response = context.evaluation["response"]
    metrics = separation_metrics(
        train_latent,
        context.train["term"].astype(str),
        test_latent,
        context.test["term"].astype(str),
        context.pair,
    )
    missing = [t for t in context.terms if t not in generated]
    if missing:
        raise ValueError(f"the model generated no preset for term(s) {missing}")
    curves = {t: responses(np.asarray(generated[t])[None, :], response)[0] for t in context.terms}
    metrics.update(context.generation(curves, context.reference_rms_db))
    metrics.update(morph_metrics(responses(morph_settings, response), response))
    metrics.update(context.distribution(draws))
    metrics.update(context.morph_distribution(morph_midpoints))
    return metrics
