"""The one evaluation of a trained model (docs/design.md section 6); no Kedro, no MLflow.

:func:`evaluate_model` takes a trained model, its two normalisers, the normalised splits,
the settings in plug-in units and the training history, and returns every metric and the
figure data. The evaluation pipeline and the compare pipeline both call it, so a metric
added here appears in a run's MLflow metrics, in its ``evaluation_metrics.json`` and in
compare's per-seed table and summary.

Decoding always runs in eval mode (no dropout) and maps the decoder output to plug-in
units through the *decoder normaliser* (its inverse): Log 2's min-max inverse; Log 1's
z-score inverse (which is what turns its Hz-valued outputs into the out-of-range
frequencies it is known for); the identity for a ``plugin_units`` head trained with its
loss in consistent units. The *feature normaliser* maps plug-in units to the model's
input space.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import davies_bouldin_score, silhouette_score

from neural_eq_morphing.eq.normalisers import normaliser_from_dict
from neural_eq_morphing.eq.parameters import PARAMETERS, out_of_range_mask
from neural_eq_morphing.eq.response import clamped_response_db
from neural_eq_morphing.eq.validity import range_report
from neural_eq_morphing.models.data import PARAMS, SPLITS, features_of
from neural_eq_morphing.models.metrics import spec_of
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.models.protocol import eligible_terms
from neural_eq_morphing.models.sampling import posterior_columns, word_regions

logger = logging.getLogger(__name__)

#: The four sets of decoded settings checked against the plug-in limits.
RANGE_SETS = ("test_reconstructions", "term_centroids", "interpolations", "random_latents")
#: The sets that are generated (not reconstructions of real settings).
GENERATED_SETS = ("term_centroids", "interpolations", "random_latents")
FREQ_COLUMNS = [p.name for p in PARAMETERS if p.kind == "freq"]
#: Parameter kinds and the name of their valid-share metric.
_KIND_METRICS = {
    "gain": "valid_gain_share",
    "freq": "valid_frequency_share",
    "q": "valid_q_share",
}


@dataclass
class ModelEvaluation:
    """What :func:`evaluate_model` measured.

    Attributes:
        metrics: Every scalar metric under its one name (``silhouette.held_out.latent``,
            ``generation_rms_db``, …; docs/metrics.md); NaN where a metric is undefined.
        details: The structured results behind the metrics (JSON-able): per-set range
            reports with the worst offending values, clustering row counts, per-term
            generation errors, training health.
        latent_embeddings: Every row's latent (``entry_id``, ``contributor_id``, ``term``,
            ``split``, ``latent_00`` …).
        term_centroids: Mean training latent per term (``term``, ``n_rows``, latents).
        generated_presets: Each term's decoded centroid in plug-in units, with ``valid``.
        morph_table: Decoded settings along the morph between two terms' centroids.
    """

    metrics: dict[str, float]
    details: dict[str, Any]
    latent_embeddings: pd.DataFrame
    term_centroids: pd.DataFrame
    generated_presets: pd.DataFrame
    morph_table: pd.DataFrame

    def document(self) -> dict[str, Any]:
        """The metrics and details as one JSON-able document (NaN written as ``null``)."""
        metrics = {k: (v if np.isfinite(v) else None) for k, v in self.metrics.items()}
        return {"metrics": metrics, **self.details}


def latent_columns(frame: pd.DataFrame) -> list[str]:
    """The ``latent_*`` columns of a table, in order."""
    return [column for column in frame.columns if column.startswith("latent_")]


def decode(
    model: SemanticEQModel, decoder_normaliser: Mapping[str, Any], latent: np.ndarray
) -> np.ndarray:
    """Decode latents ``(n, latent_dim)`` to EQ settings ``(n, 13)`` in plug-in units."""
    model.eval()
    with torch.no_grad():
        output = model.decode(torch.tensor(np.asarray(latent, dtype=np.float32))).numpy()
    return normaliser_from_dict(decoder_normaliser).inverse_transform(output.astype(np.float64))


def reconstruct(model: SemanticEQModel, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode and decode normalised features ``(n, 13)``; return ``(latent, decoder output)``."""
    model.eval()
    with torch.no_grad():
        latent = model.encode(torch.tensor(np.asarray(features, dtype=np.float32)))
        return latent.numpy(), model.decode(latent).numpy().astype(np.float64)


def embed_settings(model: SemanticEQModel, tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Encode every row of the train, validation and test tables (eval mode).

    Returns:
        One row per setting: ``entry_id``, ``contributor_id``, ``term``, ``split``, the
        latent coordinates ``latent_00`` … (a β-VAE's posterior means) and, for a β-VAE,
        its posterior variances ``posterior_var_00`` … .
    """
    frames = [
        table[["entry_id", "contributor_id", "term"]].assign(split=name)
        for table, name in zip(tables, SPLITS, strict=True)
    ]
    features = np.concatenate([features_of(table) for table in tables])
    model.eval()
    with torch.no_grad():
        latent = model.encode(torch.from_numpy(features)).numpy()
        variance = (
            model.posterior(torch.from_numpy(features))[1].exp().numpy()
            if model.variational
            else None
        )
    columns = [f"latent_{i:02d}" for i in range(latent.shape[1])]
    frame = pd.concat(frames, ignore_index=True)
    frame["split"] = frame["split"].astype("string")
    parts = [frame, pd.DataFrame(latent, columns=columns)]
    if variance is not None:
        parts.append(pd.DataFrame(variance, columns=posterior_columns(columns)))
    return pd.concat(parts, axis=1)


def term_centroids(latent_embeddings: pd.DataFrame) -> pd.DataFrame:
    """Each term's region of the latent over its training rows (the model's own data).

    Returns:
        One row per term, most rows first: ``term``, ``n_rows``, the centroid
        (``latent_*``, the mean latent) and the spread (``spread_*``, the per-dimension
        standard deviation), which :mod:`~neural_eq_morphing.models.sampling` draws from.
    """
    train = latent_embeddings[latent_embeddings["split"] == "train"]
    regions = word_regions(train, latent_columns(train))
    return regions.sort_values("n_rows", ascending=False).reset_index()


def _interpolations(centroids: np.ndarray, step: float) -> np.ndarray:
    # Interior points only: alpha = 0 and 1 are the centroids, a set of their own.
    alphas = np.linspace(0.0, 1.0, round(1.0 / step) + 1)[1:-1]
    points = [
        (1 - alpha) * centroids[i] + alpha * centroids[j]
        for i, j in itertools.combinations(range(len(centroids)), 2)
        for alpha in alphas
    ]
    return np.array(points).reshape(-1, centroids.shape[1])


def random_latents(evaluation: Mapping[str, Any], model: SemanticEQModel) -> np.ndarray:
    """``n_random_latents`` random points of ``model``'s latent space.

    Uniform in [-1, 1]^latent_dim (the tanh range) for a deterministic model; drawn from
    the standard normal prior for a variational one (what a β-VAE's decoder is trained to
    decode). Seeded by the evaluation's ``seed``, so every model is probed at the same
    points.
    """
    rng = np.random.default_rng(int(evaluation["seed"]))
    shape = (int(evaluation["n_random_latents"]), model.latent_dim)
    if model.variational:
        return rng.standard_normal(shape)
    return rng.uniform(-1.0, 1.0, shape)


def range_validity(
    model: SemanticEQModel,
    decoder_normaliser: Mapping[str, Any],
    test_table: pd.DataFrame,
    centroids: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """Range reports of the four sets of decoded settings (:data:`RANGE_SETS`).

    Sets: test reconstructions, term centroids, pairwise interpolations between the term
    centroids (α in steps of ``interpolation_step``, endpoints excluded) and
    ``n_random_latents`` random latent points (:func:`random_latents`), seeded by ``seed``.

    Returns:
        ``{set name: range_report}`` (see :func:`neural_eq_morphing.eq.validity.range_report`).
    """
    columns = latent_columns(centroids)
    centre_latents = centroids[columns].to_numpy(np.float64)
    _, test_output = reconstruct(model, test_table[PARAMS].to_numpy())
    inverse = normaliser_from_dict(decoder_normaliser).inverse_transform
    interpolations = _interpolations(centre_latents, evaluation["interpolation_step"])
    sets = {
        "test_reconstructions": inverse(test_output),
        "term_centroids": decode(model, decoder_normaliser, centre_latents),
        "interpolations": decode(model, decoder_normaliser, interpolations),
        "random_latents": decode(model, decoder_normaliser, random_latents(evaluation, model)),
    }
    return {name: range_report(values, int(evaluation["n_worst"])) for name, values in sets.items()}


def _held_out(table: pd.DataFrame, min_rows: int) -> pd.DataFrame:
    counts = table["term"].value_counts()
    return table[table["term"].isin(counts[counts >= min_rows].index)]


def _clustering_scores(points: np.ndarray, labels: pd.Series) -> dict[str, float | int | None]:
    if labels.nunique() < 2 or len(labels) <= labels.nunique():
        return {"silhouette": None, "davies_bouldin": None, "n_rows": len(labels), "n_terms": 0}
    return {
        "silhouette": float(silhouette_score(points, labels)),
        "davies_bouldin": float(davies_bouldin_score(points, labels)),
        "n_rows": len(labels),
        "n_terms": int(labels.nunique()),
    }


def clustering(
    latent_embeddings: pd.DataFrame, tables: Sequence[pd.DataFrame], evaluation: Mapping[str, Any]
) -> dict[str, Any]:
    """Silhouette and Davies–Bouldin (labels = term) on the latent and on the raw features.

    Two protocols: *in-sample* (every filtered row) and *held-out* (test rows of terms
    with at least ``min_test_rows`` test rows). The baseline is the same computation on
    the normalised 13 parameters, without any model.

    Returns:
        ``{protocol: {"latent": {...}, "baseline": {...}}}``.
    """
    features = pd.concat(list(tables), ignore_index=True)
    features = features.set_index("entry_id").loc[latent_embeddings["entry_id"]]
    frames = {
        "in_sample": latent_embeddings.index,
        "held_out": _held_out(
            latent_embeddings[latent_embeddings["split"] == "test"],
            int(evaluation["min_test_rows"]),
        ).index,
    }
    latent = latent_embeddings[latent_columns(latent_embeddings)].to_numpy()
    raw = features[PARAMS].to_numpy()
    result = {}
    for protocol, rows in frames.items():
        positions = latent_embeddings.index.get_indexer(rows)
        labels = latent_embeddings["term"].iloc[positions].reset_index(drop=True)
        result[protocol] = {
            "latent": _clustering_scores(latent[positions], labels),
            "baseline": _clustering_scores(raw[positions], labels),
        }
    return result


def _summary(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
    }


def reconstruction(
    model: SemanticEQModel,
    feature_normaliser: Mapping[str, Any],
    decoder_normaliser: Mapping[str, Any],
    test_table: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """Reconstruction error on the test split.

    ``normalised_mse`` compares the decoder output with the normalised input in the
    design's own feature space (for Log 1 that is its units-mismatched training loss; a
    decoder that outputs plug-in units is first mapped into that space);
    ``response_rms_db`` is, per setting, the RMS over the frequency grid of the difference
    between the dB responses of input and reconstruction (both in plug-in units, clamped
    to the plug-in limits), summarised by mean, median and 95th percentile.
    """
    features = test_table[PARAMS].to_numpy(np.float64)
    _, output = reconstruct(model, features)
    feature_space = normaliser_from_dict(feature_normaliser)
    reconstructed = normaliser_from_dict(decoder_normaliser).inverse_transform(output)
    if decoder_normaliser != feature_normaliser:
        output = feature_space.transform(reconstructed)
    response = evaluation["response"]
    original = feature_space.inverse_transform(features)
    error = clamped_response_db(reconstructed, **response) - clamped_response_db(
        original, **response
    )
    rms = np.sqrt(np.mean(error**2, axis=1))
    return {
        "n_rows": len(features),
        "normalised_mse": float(np.mean((output - features) ** 2)),
        "response_rms_db": _summary(rms),
    }


def generated_presets(
    model: SemanticEQModel, decoder_normaliser: Mapping[str, Any], centroids: pd.DataFrame
) -> pd.DataFrame:
    """Decode each term's centroid to an EQ setting in plug-in units, like a preset.

    Returns:
        One row per term: ``term``, ``n_rows``, the 13 parameters and ``valid`` (all
        parameters inside the plug-in limits).
    """
    settings = decode(model, decoder_normaliser, centroids[latent_columns(centroids)].to_numpy())
    presets = centroids[["term", "n_rows"]].copy()
    presets[PARAMS] = settings
    presets["valid"] = ~out_of_range_mask(settings).any(axis=1)
    return presets


def morph_table(
    model: SemanticEQModel,
    decoder_normaliser: Mapping[str, Any],
    centroids: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> pd.DataFrame:
    """Decoded settings along the line between two term centroids (e.g. warm → bright).

    Returns:
        One row per α of ``morph_alphas``: ``alpha``, ``from_term``, ``to_term`` and the
        13 parameters in plug-in units.

    Raises:
        ValueError: When a term of ``evaluation["morph"]`` has no centroid.
    """
    source, target = evaluation["morph"]
    by_term = centroids.set_index("term")[latent_columns(centroids)]
    missing = [term for term in (source, target) if term not in by_term.index]
    if missing:
        raise ValueError(
            f"evaluation.morph names term(s) {missing} that have no centroid; "
            f"known terms: {sorted(by_term.index)}"
        )
    alphas = np.asarray(evaluation["morph_alphas"], dtype=np.float64)
    start, end = by_term.loc[source].to_numpy(), by_term.loc[target].to_numpy()
    latent = (1 - alphas)[:, None] * start + alphas[:, None] * end
    table = pd.DataFrame({"alpha": alphas, "from_term": source, "to_term": target})
    table[PARAMS] = decode(model, decoder_normaliser, latent)
    return table


def generation(
    presets: pd.DataFrame,
    test_settings: pd.DataFrame,
    train_terms: pd.Series,
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """RMS dB distance between each term's generated preset and its held-out rows.

    For every term with test rows: the response of the decoded centroid against the mean
    dB response of the term's test-split settings (RMS over the frequency grid).

    Args:
        presets: Output of :func:`generated_presets`.
        test_settings: The test split's settings in plug-in units (``term`` and the 13
            parameters).
        train_terms: The training split's terms.
        evaluation: ``response`` and ``min_test_rows``.

    Returns:
        ``{"per_term": {term: {"rms_db", "n_test_rows"}}, "mean_rms_db": ...}``, where
        the mean is ``generation_rms_db``: over the terms the registry makes eligible, the
        protocol's rule (:func:`~neural_eq_morphing.models.protocol.eligible_terms`: at
        least ``min_test_rows`` rows in both the test and the training split).
    """
    response = evaluation["response"]
    generated = dict(
        zip(
            presets["term"],
            clamped_response_db(presets[PARAMS].to_numpy(), **response),
            strict=True,
        )
    )
    per_term = {}
    for term, rows in test_settings.groupby("term"):
        if term not in generated:
            continue
        target = clamped_response_db(rows[PARAMS].to_numpy(), **response).mean(axis=0)
        per_term[str(term)] = {
            "rms_db": float(np.sqrt(np.mean((generated[term] - target) ** 2))),
            "n_test_rows": len(rows),
        }
    terms = eligible_terms(test_settings["term"], train_terms, int(evaluation["min_test_rows"]))
    eligible = [per_term[t]["rms_db"] for t in terms if t in per_term]
    return {"per_term": per_term, "mean_rms_db": float(np.mean(eligible)) if eligible else None}


def training_health(history: pd.DataFrame, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the contrastive loss fell: mean of the last N epochs below the first N.

    With fewer than 2·N epochs the two windows would overlap, and a design trained
    without the contrastive term (weight 0 throughout, e.g. a β-VAE) has nothing to
    learn there: then the verdict is ``None``.
    """
    window = int(evaluation["health_window"])
    ordered = history.sort_values("epoch")
    values = ordered["train_contrastive"].to_numpy()
    first, last = float(values[:window].mean()), float(values[-window:].mean())
    trained = bool((ordered["contrastive_weight"] > 0).any())
    fell = bool(last < first) if trained and len(values) >= 2 * window else None
    return {"contrastive_first": first, "contrastive_last": last, "contrastive_fell": fell}


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def flat_metrics(
    details: Mapping[str, Any],
    presets: pd.DataFrame,
    history: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> dict[str, float]:
    """Every scalar metric under its one name (docs/metrics.md lists them all).

    Args:
        details: ``range_validity``, ``clustering``, ``reconstruction``, ``generation``
            and ``training_health`` as computed by :func:`evaluate_model`.
        presets: The generated presets (the morph's terms become ``preset.*`` metrics).
        history: The model's training history (its final losses).
        evaluation: The evaluation parameters (``morph``).

    Returns:
        ``{name: value}``; NaN where a metric is undefined (too few rows, too few epochs).
    """
    metrics: dict[str, float] = {}
    ranges = details["range_validity"]
    for name, report in ranges.items():
        metrics[f"valid_share.{name}"] = report["valid_share"]
        for kind, metric in _KIND_METRICS.items():
            metrics[f"{metric}.{name}"] = report["by_kind"][kind]
        for band, share in report["by_band"].items():
            metrics[f"valid_band_share.{name}.{band}"] = share
    by_parameter = [
        ranges[name]["by_parameter"][c] for name in GENERATED_SETS for c in FREQ_COLUMNS
    ]
    metrics["max_frequency_hz"] = max(entry["max"] for entry in by_parameter)
    metrics["min_frequency_hz"] = min(entry["min"] for entry in by_parameter)
    for protocol, spaces in details["clustering"].items():
        metrics[f"rows.{protocol}"] = spaces["latent"]["n_rows"]
        metrics[f"terms.{protocol}"] = spaces["latent"]["n_terms"]
        for space, scores in spaces.items():
            for metric in ("silhouette", "davies_bouldin"):
                metrics[f"{metric}.{protocol}.{space}"] = _number(scores[metric])
    recon = details["reconstruction"]
    metrics["reconstruction_mse"] = recon["normalised_mse"]
    for statistic, value in recon["response_rms_db"].items():
        metrics[f"reconstruction_rms_db.{statistic}"] = value
    metrics["generation_rms_db"] = _number(details["generation"]["mean_rms_db"])
    for term, scores in details["generation"]["per_term"].items():
        metrics[f"generation_rms_db.{term}"] = scores["rms_db"]
    for key, value in details["training_health"].items():
        metrics[key] = _number(value)
    by_term = presets.set_index("term")
    for term in evaluation["morph"]:
        if term in by_term.index:
            for column in PARAMS:
                metrics[f"preset.{term}.{column}"] = float(by_term.loc[term, column])
    last = history.sort_values("epoch").iloc[-1]
    metrics["final_train_loss"] = float(last["train_loss"])
    metrics["final_val_loss"] = float(last["val_loss"])
    list(map(spec_of, metrics))  # every name is declared in the registry (KeyError names it)
    return {name: float(value) for name, value in metrics.items()}


def evaluate_model(
    model: SemanticEQModel,
    feature_normaliser: Mapping[str, Any],
    decoder_normaliser: Mapping[str, Any],
    tables: Sequence[pd.DataFrame],
    settings: pd.DataFrame,
    history: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> ModelEvaluation:
    """Measure one trained model: ranges, clustering, reconstruction, generation, health.

    Args:
        model: The trained model.
        feature_normaliser: The normaliser of its input features (JSON description).
        decoder_normaliser: The normaliser whose inverse maps its decoder output to
            plug-in units.
        tables: The normalised train, validation and test tables.
        settings: The filtered settings in plug-in units (``entry_id``, ``term``, the 13
            parameters); the test rows are those of ``tables[2]``.
        history: The model's per-epoch training history (``epoch``, ``train_loss``,
            ``val_loss``, ``train_contrastive``, …).
        evaluation: The evaluation parameters (``parameters_evaluation.yml``).

    Returns:
        The metrics, their details and the figure data.
    """
    train, _, test = tables
    if train.empty or test.empty:
        raise ValueError("evaluation needs non-empty train and test tables")
    latent = embed_settings(model, tables)
    centroids = term_centroids(latent)
    presets = generated_presets(model, decoder_normaliser, centroids)
    test_settings = settings[settings["entry_id"].isin(test["entry_id"])]
    details = {
        "range_validity": range_validity(model, decoder_normaliser, test, centroids, evaluation),
        "clustering": clustering(latent, tables, evaluation),
        "reconstruction": reconstruction(
            model, feature_normaliser, decoder_normaliser, test, evaluation
        ),
        "generation": generation(presets, test_settings, train["term"], evaluation),
        "training_health": training_health(history, evaluation),
    }
    return ModelEvaluation(
        metrics=flat_metrics(details, presets, history, evaluation),
        details=details,
        latent_embeddings=latent,
        term_centroids=centroids,
        generated_presets=presets,
        morph_table=morph_table(model, decoder_normaliser, centroids, evaluation),
    )


def out_of_range_sets(details: Mapping[str, Any], n_worst: int = 3) -> dict[str, list]:
    """The sets with decoded settings outside the plug-in limits, with their worst values."""
    return {
        name: report["worst"][:n_worst]
        for name, report in details["range_validity"].items()
        if report["valid_share"] < 1.0
    }
