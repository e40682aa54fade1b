"""Nodes of the ``compare`` pipeline: every configuration over seeds, then the summary.

Each configuration (Log 1, Log 2, and the ablation variants) is trained once for all its
seeds, as one batched ensemble in which every member gets the training it would get
alone; each member is then evaluated with the evaluation pipeline's own functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES, PARAMETERS
from neural_eq_morphing.models.progress import default_progress
from neural_eq_morphing.models.training import TrainingConfig, train
from neural_eq_morphing.pipelines.compare.report import build_blocks, to_html, to_markdown
from neural_eq_morphing.pipelines.data_processing.nodes import fit_normaliser, normalise_splits
from neural_eq_morphing.pipelines.evaluation.nodes import (
    check_training_health,
    evaluate_clustering,
    evaluate_generation,
    evaluate_ranges,
    evaluate_reconstruction,
    generate_presets,
    morph_table,
    term_centroids,
)
from neural_eq_morphing.pipelines.training.nodes import (
    embed_settings,
    features_of,
    output_normaliser,
    term_codes,
)

logger = logging.getLogger(__name__)

PARAMS = list(PARAMETER_NAMES)
FREQ_COLUMNS = [p.name for p in PARAMETERS if p.kind == "freq"]


def compare_seeds(compare: Mapping[str, Any]) -> list[int]:
    """The seeds of the comparison: ``first_seed``, ``first_seed + 1``, … (``n_seeds``)."""
    n_seeds = int(compare["n_seeds"])
    if n_seeds < 1:
        raise ValueError(f"compare.n_seeds must be at least 1, got {n_seeds}")
    return [int(compare["first_seed"]) + k for k in range(n_seeds)]


def _training_config(
    base: Mapping[str, Any], overrides: Mapping[str, Any], epochs: int | None
) -> TrainingConfig:
    values = {key: value for key, value in base.items() if key != "seed"}
    values.update(overrides)
    if epochs is not None:
        values["epochs"] = int(epochs)
    return TrainingConfig.from_dict(values)


def _seed_row(
    ranges: Mapping[str, Any],
    clustering: Mapping[str, Any],
    reconstruction: Mapping[str, Any],
    generation: Mapping[str, Any],
    health: Mapping[str, Any],
) -> dict[str, float]:
    """The comparison's metrics of one trained model, as one flat row."""
    row: dict[str, float] = {}
    for name, report in ranges.items():
        row[f"valid_share.{name}"] = report["valid_share"]
        row[f"valid_frequency_share.{name}"] = report["by_kind"]["freq"]
    generated = ("term_centroids", "interpolations", "random_latents")
    row["max_frequency_hz"] = max(
        ranges[name]["by_parameter"][column]["max"] for name in generated for column in FREQ_COLUMNS
    )
    row["min_frequency_hz"] = min(
        ranges[name]["by_parameter"][column]["min"] for name in generated for column in FREQ_COLUMNS
    )
    for protocol, spaces in clustering.items():
        row[f"rows.{protocol}"] = spaces["latent"]["n_rows"]
        row[f"terms.{protocol}"] = spaces["latent"]["n_terms"]
        for space, scores in spaces.items():
            for metric in ("silhouette", "davies_bouldin"):
                row[f"{metric}.{protocol}.{space}"] = scores[metric]
    row["reconstruction_mse"] = reconstruction["normalised_mse"]
    for statistic, value in reconstruction["response_rms_db"].items():
        row[f"reconstruction_rms_db.{statistic}"] = value
    row["generation_rms_db"] = generation["mean_rms_db"]
    row["contrastive_fell"] = (
        float(health["contrastive_fell"]) if health["contrastive_fell"] is not None else np.nan
    )
    return row


def run_configurations(
    settings_filtered: pd.DataFrame,
    split_assignment: pd.DataFrame,
    log1_training: Mapping[str, Any],
    log2_training: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    compare: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Train and evaluate every configuration over the comparison's seeds.

    Args:
        settings_filtered: Filtered settings in plug-in units.
        split_assignment: The contributor-grouped split.
        log1_training: Log 1's training parameters (the base of the ``log1`` configs).
        log2_training: Log 2's training parameters.
        evaluation: The evaluation parameters.
        compare: ``n_seeds``, ``first_seed``, ``epochs`` and ``configurations``.

    Returns:
        One row of metrics per configuration and seed (twice: for the versioned table and
        for the per-seed MLflow runs); the per-epoch histories of every member; and, per
        configuration, the examples the report draws (first seed's
        presets, morph, latent embeddings) plus timings; and the timings as MLflow metrics
        (``<configuration>.wall_s`` and ``.train_s``).
    """
    seeds = compare_seeds(compare)
    bases = {"log1": log1_training, "log2": log2_training}
    unknown = {
        name: spec.get("variant")
        for name, spec in compare["configurations"].items()
        if spec.get("variant") not in bases
    }
    if unknown:
        raise ValueError(
            f"compare.configurations {unknown} name a variant the comparison has no "
            f"training block for; expected one of {sorted(bases)} (a configuration starts "
            "from log1.training or log2.training and changes it with its 'training' overrides)"
        )
    rows, histories, examples = [], [], {}
    for name, spec in compare["configurations"].items():
        started = time.perf_counter()
        config = _training_config(
            bases[spec["variant"]], spec.get("training") or {}, compare["epochs"]
        )
        normaliser = fit_normaliser(settings_filtered, split_assignment, spec["normaliser"])
        tables = normalise_splits(settings_filtered, split_assignment, normaliser)
        train_labels, val_labels = term_codes(tables[0], tables[1])
        zscore = normaliser if normaliser["kind"] == "zscore" else None
        logger.info("Comparing %s: %d seeds, %d epochs", name, len(seeds), config.epochs)
        result = train(
            config,
            features_of(tables[0]),
            train_labels,
            features_of(tables[1]),
            val_labels,
            seeds=seeds,
            zscore_mean=None if zscore is None else zscore["mean"],
            zscore_std=None if zscore is None else zscore["std"],
            progress=default_progress(f"compare {name}"),
        )
        decoder_space = output_normaliser(normaliser, config)
        for seed, model in zip(result.seeds, result.models, strict=True):
            history = result.history[result.history["seed"] == seed]
            latent = embed_settings(model, *tables)
            centroids = term_centroids(latent)
            presets = generate_presets(model, decoder_space, centroids)
            row = _seed_row(
                evaluate_ranges(model, decoder_space, tables[2], centroids, evaluation),
                evaluate_clustering(latent, *tables, evaluation),
                evaluate_reconstruction(model, normaliser, decoder_space, tables[2], evaluation),
                evaluate_generation(presets, settings_filtered, split_assignment, evaluation),
                check_training_health(history, evaluation),
            )
            # The generated presets of the morph's terms, so the report's preset table is
            # in MLflow too (nested run of each seed).
            by_term = presets.set_index("term")
            for term in evaluation["morph"]:
                if term in by_term.index:
                    for column in PARAMS:
                        row[f"preset.{term}.{column}"] = float(by_term.loc[term, column])
            last = history.sort_values("epoch").iloc[-1]
            row["final_train_loss"] = float(last["train_loss"])
            row["final_val_loss"] = float(last["val_loss"])
            rows.append({"configuration": name, "seed": seed, **row})
            histories.append(history.assign(configuration=name))
            if seed == seeds[0]:
                examples[name] = {
                    "presets": presets,
                    "morph": morph_table(model, decoder_space, centroids, evaluation),
                    "latent": latent,
                    "history": history,
                }
        examples[name]["wall_s"] = time.perf_counter() - started
        examples[name]["train_s"] = result.timing.train_s
        logger.info(
            "Compared %s in %.1f s (training %.1f s)",
            name,
            examples[name]["wall_s"],
            result.timing.train_s,
        )
    metrics = pd.DataFrame(rows)
    history_table = pd.concat(histories, ignore_index=True)
    timings = {
        f"{name}.{key}": {"value": float(example[key]), "step": 0}
        for name, example in examples.items()
        for key in ("wall_s", "train_s")
    }
    return metrics, metrics, history_table, examples, timings


def summarise_comparison(seed_metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1) and count of every metric per configuration.

    Returns:
        Long table: ``configuration``, ``metric``, ``mean``, ``std``, ``n``.
    """
    long = seed_metrics.melt(
        id_vars=["configuration", "seed"], var_name="metric", value_name="value"
    )
    order = list(dict.fromkeys(seed_metrics["configuration"]))
    summary = (
        long.groupby(["configuration", "metric"], sort=False)["value"]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
    )
    summary["configuration"] = pd.Categorical(summary["configuration"], order, ordered=True)
    return (
        summary.sort_values(["configuration", "metric"])
        .reset_index(drop=True)
        .astype({"configuration": "string"})
    )


def summary_metrics(summary: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The summary as MLflow metrics of the comparison's parent run (step 0)."""
    metrics = {}
    for row in summary.itertuples(index=False):
        for statistic in ("mean", "std"):
            value = getattr(row, statistic)
            if value is not None and np.isfinite(value):
                metrics[f"{row.configuration}.{row.metric}.{statistic}"] = {
                    "value": float(value),
                    "step": 0,
                }
    return metrics


def build_report(
    summary: pd.DataFrame,
    seed_metrics: pd.DataFrame,
    examples: Mapping[str, Any],
    seed_runs: pd.DataFrame,
    provenance: Mapping[str, Any],
    compare: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> tuple[str, str]:
    """Write the comparison report as Markdown and as self-contained HTML.

    Returns:
        The Markdown text and the HTML page (figures embedded as PNG data URIs).
    """
    blocks = build_blocks(
        summary,
        seed_metrics,
        examples,
        seed_runs,
        provenance,
        compare,
        evaluation,
        compare_seeds(compare),
    )
    return to_markdown(blocks), to_html(blocks)
