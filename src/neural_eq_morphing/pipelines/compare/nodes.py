"""Nodes of the ``compare`` pipeline: every configuration over seeds, then the summary.

Each configuration (a design, or a design plus changes: the ablations) is trained once
for all its seeds, as one batched ensemble in which every member gets the training it
would get alone; each member is then measured by
:func:`~neural_eq_morphing.models.evaluation.evaluate_model`, the evaluation pipeline's
own function, so both report the same metrics under the same names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from neural_eq_morphing.models.data import decoder_normaliser, train_on_tables
from neural_eq_morphing.models.evaluation import evaluate_model
from neural_eq_morphing.models.progress import default_progress
from neural_eq_morphing.models.training import TrainingConfig
from neural_eq_morphing.pipelines.data_processing.nodes import fit_normaliser, normalise_splits
from neural_eq_morphing.pipelines.designs import compare_seeds, resolve_configurations

logger = logging.getLogger(__name__)

#: Prefix of the columns of ``compare_seed_runs`` that become the nested runs' parameters.
PARAM_PREFIX = "param."


def configurations_of(
    designs: Mapping[str, Any], compare: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Resolve the compare configurations from the designs (see ``resolve_configurations``).

    ``compare.epochs``, when set, replaces every configuration's epochs (a smoke run).
    """
    configurations = resolve_configurations(designs, compare)
    if compare.get("epochs") is not None:
        for configuration in configurations.values():
            configuration["training"]["epochs"] = int(compare["epochs"])
    return configurations


def run_configurations(
    settings_filtered: pd.DataFrame,
    split_assignment: pd.DataFrame,
    configurations: Mapping[str, Mapping[str, Any]],
    evaluation: Mapping[str, Any],
    compare: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Train and evaluate every configuration over the comparison's seeds.

    Args:
        settings_filtered: Filtered settings in plug-in units.
        split_assignment: The contributor-grouped split.
        configurations: Output of :func:`configurations_of`.
        evaluation: The evaluation parameters.
        compare: ``n_seeds`` and ``first_seed``.

    Returns:
        One row of metrics per configuration and seed; the per-epoch histories of every
        member; per configuration, the examples the report draws (first seed's presets,
        morph, latent embeddings, history) and timings; and the timings as MLflow metrics
        (``<configuration>.wall_s`` and ``.train_s``).
    """
    seeds = compare_seeds(compare)
    rows, histories, examples = [], [], {}
    for name, configuration in configurations.items():
        started = time.perf_counter()
        feature_normaliser = fit_normaliser(
            settings_filtered, split_assignment, configuration["feature_normaliser"]
        )
        tables = normalise_splits(settings_filtered, split_assignment, feature_normaliser)
        config = TrainingConfig.from_dict(configuration["training"])
        logger.info("Comparing %s: %d seeds, %d epochs", name, len(seeds), config.epochs)
        result = train_on_tables(
            config,
            tables[0],
            tables[1],
            feature_normaliser,
            seeds,
            progress=default_progress(f"compare {name}"),
        )
        output_space = decoder_normaliser(
            feature_normaliser, result.config.decoder_head, result.config.recon_in_consistent_units
        )
        for seed, model in zip(result.seeds, result.models, strict=True):
            history = result.history[result.history["seed"] == seed]
            evaluated = evaluate_model(
                model,
                feature_normaliser,
                output_space,
                tables,
                settings_filtered,
                history,
                evaluation,
            )
            rows.append({"configuration": name, "seed": seed, **evaluated.metrics})
            histories.append(history.assign(configuration=name))
            if seed == seeds[0]:
                examples[name] = {
                    "presets": evaluated.generated_presets,
                    "morph": evaluated.morph_table,
                    "latent": evaluated.latent_embeddings,
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
    timings = {
        f"{name}.{key}": {"value": float(example[key]), "step": 0}
        for name, example in examples.items()
        for key in ("wall_s", "train_s")
    }
    return pd.DataFrame(rows), pd.concat(histories, ignore_index=True), examples, timings


def _flat_params(prefix: str, value: Any, into: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flat_params(f"{prefix}.{key}", inner, into)
    else:
        into[prefix] = str(value)


def seed_runs(
    seed_metrics: pd.DataFrame, configurations: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """The per-seed metrics with each run's parameters, for one nested MLflow run each.

    Parameters: ``design``, ``seed`` and the configuration's resolved
    ``feature_normaliser.*`` and ``training.*`` values (columns ``param.<name>``).
    """
    params = {}
    for name, configuration in configurations.items():
        flat: dict[str, str] = {}
        for key in ("design", "feature_normaliser", "training"):
            _flat_params(PARAM_PREFIX + key, configuration[key], flat)
        params[name] = flat
    extra = pd.DataFrame(
        [
            {**params[row.configuration], f"{PARAM_PREFIX}seed": str(row.seed)}
            for row in seed_metrics[["configuration", "seed"]].itertuples(index=False)
        ],
        index=seed_metrics.index,
    )
    return pd.concat([seed_metrics, extra], axis=1)


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
