"""Nodes of the ``evaluation`` pipeline (DESIGN.md section 6).

Decoding always runs in eval mode (no dropout) and maps the decoder output to plug-in
units through the *output normaliser* that the training pipeline saved with the model
(``<variant>.model_normaliser``): Log 2's min-max inverse; Log 1's z-score inverse (which
is what turns its Hz-valued outputs into the out-of-range frequencies it is known for);
the identity for a Log 1 trained with its loss in consistent units.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import davies_bouldin_score, silhouette_score

from neural_eq_morphing.eq.normalisers import normaliser_from_dict
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES, out_of_range_mask
from neural_eq_morphing.eq.response import clamped_response_db
from neural_eq_morphing.eq.validity import range_report
from neural_eq_morphing.models.modules import SemanticEQModel

logger = logging.getLogger(__name__)

PARAMS = list(PARAMETER_NAMES)
RANGE_SETS = ("test_reconstructions", "term_centroids", "interpolations", "random_latents")


def _latent_columns(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column.startswith("latent_")]


def decode(
    model: SemanticEQModel, output_normaliser: Mapping[str, Any], latent: np.ndarray
) -> np.ndarray:
    """Decode latents to EQ settings in plug-in units (eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        output = model.decode(torch.tensor(np.asarray(latent, dtype=np.float32))).numpy()
    return normaliser_from_dict(output_normaliser).inverse_transform(output.astype(np.float64))


def reconstruct(model: SemanticEQModel, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode and decode normalised features; return ``(latent, decoder output)``."""
    model.eval()
    with torch.no_grad():
        latent = model.encode(torch.tensor(np.asarray(features, dtype=np.float32)))
        return latent.numpy(), model.decode(latent).numpy().astype(np.float64)


def _responses(settings: np.ndarray, response: Mapping[str, Any]) -> np.ndarray:
    return clamped_response_db(settings, **response)


def term_centroids(latent_embeddings: pd.DataFrame) -> pd.DataFrame:
    """Mean latent of each term over its training rows (the model's own data).

    Args:
        latent_embeddings: Output of the training pipeline's ``embed_settings``.

    Returns:
        One row per term: ``term``, ``n_rows`` and the latent coordinates.
    """
    train = latent_embeddings[latent_embeddings["split"] == "train"]
    columns = _latent_columns(train)
    centroids = train.groupby("term")[columns].mean()
    centroids.insert(0, "n_rows", train.groupby("term").size())
    return centroids.sort_values("n_rows", ascending=False).reset_index()


def _interpolations(centroids: np.ndarray, step: float) -> np.ndarray:
    # Interior points only: alpha = 0 and 1 are the centroids, a set of their own.
    alphas = np.linspace(0.0, 1.0, round(1.0 / step) + 1)[1:-1]
    points = [
        (1 - alpha) * centroids[i] + alpha * centroids[j]
        for i, j in itertools.combinations(range(len(centroids)), 2)
        for alpha in alphas
    ]
    return np.array(points).reshape(-1, centroids.shape[1])


def evaluate_ranges(
    model: SemanticEQModel,
    output_normaliser: Mapping[str, Any],
    test_table: pd.DataFrame,
    centroids: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """Range validity over the four sets of decoded settings.

    Sets: test reconstructions, term centroids, pairwise interpolations between the term
    centroids (α in steps of ``interpolation_step``, endpoints excluded) and
    ``n_random_latents`` random latent points, uniform in [-1, 1] (the tanh range), seeded
    by ``seed``.

    Returns:
        ``{set name: range_report}`` (see :func:`neural_eq_morphing.eq.validity.range_report`).
    """
    latent_dim = len(_latent_columns(centroids))
    centre_latents = centroids[_latent_columns(centroids)].to_numpy(np.float64)
    rng = np.random.default_rng(int(evaluation["seed"]))
    random_latents = rng.uniform(-1.0, 1.0, (int(evaluation["n_random_latents"]), latent_dim))
    _, test_output = reconstruct(model, test_table[PARAMS].to_numpy())
    inverse = normaliser_from_dict(output_normaliser).inverse_transform
    interpolations = _interpolations(centre_latents, evaluation["interpolation_step"])
    sets = {
        "test_reconstructions": inverse(test_output),
        "term_centroids": decode(model, output_normaliser, centre_latents),
        "interpolations": decode(model, output_normaliser, interpolations),
        "random_latents": decode(model, output_normaliser, random_latents),
    }
    report = {
        name: range_report(values, int(evaluation["n_worst"])) for name, values in sets.items()
    }
    for name, summary in report.items():
        logger.info(
            "%s: %d of %d decoded settings inside the plug-in limits (%.1f%%)",
            name,
            round(summary["valid_share"] * summary["n_settings"]),
            summary["n_settings"],
            100 * summary["valid_share"],
        )
    return report


def _held_out(table: pd.DataFrame, min_rows: int) -> pd.DataFrame:
    counts = table["term"].value_counts()
    return table[table["term"].isin(counts[counts >= min_rows].index)]


def _clustering(points: np.ndarray, labels: pd.Series) -> dict[str, float | int | None]:
    if labels.nunique() < 2 or len(labels) <= labels.nunique():
        return {"silhouette": None, "davies_bouldin": None, "n_rows": len(labels), "n_terms": 0}
    return {
        "silhouette": float(silhouette_score(points, labels)),
        "davies_bouldin": float(davies_bouldin_score(points, labels)),
        "n_rows": len(labels),
        "n_terms": int(labels.nunique()),
    }


def evaluate_clustering(
    latent_embeddings: pd.DataFrame,
    train_table: pd.DataFrame,
    validation_table: pd.DataFrame,
    test_table: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """Silhouette and Davies–Bouldin (labels = term) on the latent and on the raw features.

    Two protocols: *in-sample* (every filtered row) and *held-out* (test rows of terms
    with at least ``min_test_rows`` test rows). The baseline is the same computation on
    the normalised 13 parameters, without any model.

    Returns:
        ``{protocol: {"latent": {...}, "baseline": {...}}}``.
    """
    features = pd.concat([train_table, validation_table, test_table], ignore_index=True)
    features = features.set_index("entry_id").loc[latent_embeddings["entry_id"]]
    frames = {
        "in_sample": latent_embeddings.index,
        "held_out": _held_out(
            latent_embeddings[latent_embeddings["split"] == "test"],
            int(evaluation["min_test_rows"]),
        ).index,
    }
    latent = latent_embeddings[_latent_columns(latent_embeddings)].to_numpy()
    raw = features[PARAMS].to_numpy()
    result = {}
    for protocol, rows in frames.items():
        positions = latent_embeddings.index.get_indexer(rows)
        labels = latent_embeddings["term"].iloc[positions].reset_index(drop=True)
        result[protocol] = {
            "latent": _clustering(latent[positions], labels),
            "baseline": _clustering(raw[positions], labels),
        }
        logger.info(
            "Clustering (%s): latent silhouette %s, DB %s; raw-parameter baseline %s, %s",
            protocol,
            *(
                f"{result[protocol][space][metric]:.3f}"
                if result[protocol][space][metric] is not None
                else "n/a"
                for space in ("latent", "baseline")
                for metric in ("silhouette", "davies_bouldin")
            ),
        )
    return result


def _summary(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
    }


def evaluate_reconstruction(
    model: SemanticEQModel,
    normaliser: Mapping[str, Any],
    output_normaliser: Mapping[str, Any],
    test_table: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """Reconstruction error on the test split.

    ``normalised_mse`` compares the decoder output with the normalised input in the
    variant's own feature space (for Log 1 that is its units-mismatched training loss; a
    decoder that outputs plug-in units is first mapped into that space);
    ``response_rms_db`` is, per setting, the RMS over the frequency grid of the difference
    between the dB responses of input and reconstruction (both in plug-in units, clamped
    to the plug-in limits), summarised by mean, median and 95th percentile.
    """
    features = test_table[PARAMS].to_numpy(np.float64)
    _, output = reconstruct(model, features)
    feature_space = normaliser_from_dict(normaliser)
    reconstructed = normaliser_from_dict(output_normaliser).inverse_transform(output)
    if output_normaliser != normaliser:
        output = feature_space.transform(reconstructed)
    response = evaluation["response"]
    original = feature_space.inverse_transform(features)
    error = _responses(reconstructed, response) - _responses(original, response)
    rms = np.sqrt(np.mean(error**2, axis=1))
    result = {
        "n_rows": len(features),
        "normalised_mse": float(np.mean((output - features) ** 2)),
        "response_rms_db": _summary(rms),
    }
    logger.info(
        "Reconstruction (test): normalised MSE %.4g, response RMS %.2f dB (median %.2f, p95 %.2f)",
        result["normalised_mse"],
        *result["response_rms_db"].values(),
    )
    return result


def generate_presets(
    model: SemanticEQModel, output_normaliser: Mapping[str, Any], centroids: pd.DataFrame
) -> pd.DataFrame:
    """Decode each term's centroid to an EQ setting in plug-in units, like a preset.

    Returns:
        One row per term: ``term``, ``n_rows``, the 13 parameters and ``valid`` (all
        parameters inside the plug-in limits).
    """
    settings = decode(model, output_normaliser, centroids[_latent_columns(centroids)].to_numpy())
    presets = centroids[["term", "n_rows"]].copy()
    presets[PARAMS] = settings
    presets["valid"] = ~out_of_range_mask(settings).any(axis=1)
    return presets


def morph_table(
    model: SemanticEQModel,
    output_normaliser: Mapping[str, Any],
    centroids: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> pd.DataFrame:
    """Decoded settings along the line between two term centroids (e.g. warm → bright).

    Returns:
        One row per α of ``morph_alphas``: ``alpha``, ``from_term``, ``to_term`` and the
        13 parameters in plug-in units.
    """
    source, target = evaluation["morph"]
    by_term = centroids.set_index("term")[_latent_columns(centroids)]
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
    table[PARAMS] = decode(model, output_normaliser, latent)
    return table


def evaluate_generation(
    presets: pd.DataFrame,
    settings_filtered: pd.DataFrame,
    split_assignment: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """RMS dB distance between each term's generated preset and its held-out rows.

    For every term with test rows: the response of the decoded centroid against the mean
    dB response of the term's test-split settings (RMS over the frequency grid).

    Returns:
        ``{"per_term": {term: {"rms_db", "n_test_rows"}}, "mean_rms_db": ...}``, where
        the mean is over terms with at least ``min_test_rows`` test rows.
    """
    response = evaluation["response"]
    test_ids = split_assignment.loc[split_assignment["split"] == "test", "entry_id"]
    test = settings_filtered[settings_filtered["entry_id"].isin(test_ids)]
    generated = dict(
        zip(presets["term"], _responses(presets[PARAMS].to_numpy(), response), strict=True)
    )
    per_term = {}
    for term, rows in test.groupby("term"):
        if term not in generated:
            continue
        target = _responses(rows[PARAMS].to_numpy(), response).mean(axis=0)
        per_term[str(term)] = {
            "rms_db": float(np.sqrt(np.mean((generated[term] - target) ** 2))),
            "n_test_rows": len(rows),
        }
    eligible = [
        v["rms_db"] for v in per_term.values() if v["n_test_rows"] >= evaluation["min_test_rows"]
    ]
    return {"per_term": per_term, "mean_rms_db": float(np.mean(eligible)) if eligible else None}


def check_training_health(
    training_history: pd.DataFrame, evaluation: Mapping[str, Any]
) -> dict[str, Any]:
    """Whether the contrastive loss fell: mean of the last N epochs below the first N.

    With fewer than 2·N epochs the two windows would overlap, so the verdict is ``None``.
    """
    window = int(evaluation["health_window"])
    values = training_history.sort_values("epoch")["train_contrastive"].to_numpy()
    first, last = float(values[:window].mean()), float(values[-window:].mean())
    fell = bool(last < first) if len(values) >= 2 * window else None
    return {"contrastive_first": first, "contrastive_last": last, "contrastive_fell": fell}


def _flatten(prefix: str, value: Any, into: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, into)
    elif isinstance(value, bool | np.bool_) or (
        isinstance(value, int | float | np.number) and np.isfinite(value)
    ):
        into[prefix] = float(value)


def summarise_evaluation(
    ranges: Mapping[str, Any],
    clustering: Mapping[str, Any],
    reconstruction: Mapping[str, Any],
    generation: Mapping[str, Any],
    health: Mapping[str, Any],
    strict_ranges: bool,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Collect every metric; fail when strict and any decoded setting is out of range.

    Returns:
        The metrics document (JSON) and the scalar metrics for MLflow
        (``{"eval.<path>": {"value": v, "step": 0}}``; lists such as the worst offending
        values stay in the JSON only).

    Raises:
        ValueError: When ``strict_ranges`` is on and any set has an out-of-range setting.
    """
    metrics = {
        "range_validity": {
            name: {key: value for key, value in report.items() if key != "by_parameter"}
            | {"by_parameter": report["by_parameter"]}
            for name, report in ranges.items()
        },
        "clustering": dict(clustering),
        "reconstruction": dict(reconstruction),
        "generation": dict(generation),
        "training_health": dict(health),
    }
    flat: dict[str, float] = {}
    _flatten("eval", {k: v for k, v in metrics.items() if k != "range_validity"}, flat)
    for name, report in ranges.items():
        _flatten(
            f"eval.range_validity.{name}",
            {key: report[key] for key in ("valid_share", "by_band", "by_kind")},
            flat,
        )
    failing = {name: r["worst"][:3] for name, r in ranges.items() if r["valid_share"] < 1.0}
    if failing and strict_ranges:
        raise ValueError(
            "decoded settings fall outside the plug-in limits, which this variant must "
            f"never produce (evaluation.strict_ranges): {failing}"
        )
    if failing:
        logger.warning("Out-of-range decoded settings (reported, not fatal): %s", failing)
    return metrics, {key: {"value": value, "step": 0} for key, value in flat.items()}
