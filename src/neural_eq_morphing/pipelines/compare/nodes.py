"""Nodes of the ``compare`` pipeline: the cross-contributor protocol (docs/design.md section 6).

1. :func:`make_folds`: the folds grouped by contributor, as a versioned table.
2. :func:`fit_folds`: per fold, the baselines and classifiers fitted on its training part.
3. :func:`run_baselines`: every baseline's metrics on every fold.
4. :func:`run_configurations`: every configuration (a design, or a design plus changes:
   the ablations) trained once for all folds and seeds, as one batched ensemble whose
   members each have their own rows; the designs' ensembles also hold the reproduction
   members (the original write-up's terms and in-sample measurement). Each member is
   measured by :func:`~neural_eq_morphing.models.evaluation.evaluate_model` (the
   evaluation pipeline's own function) and by the protocol's
   :func:`~neural_eq_morphing.models.protocol.model_metrics`.
5. :func:`summarise_comparison` and :func:`judge_comparison`: means with t-intervals over
   folds, paired differences and Holm-corrected verdicts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from neural_eq_morphing.models.config import MEMBER_FIELDS, TrainingConfig
from neural_eq_morphing.models.data import PARAMS, decoder_normaliser, member_data
from neural_eq_morphing.models.evaluation import (
    ModelEvaluation,
    decode,
    evaluate_model,
    latent_columns,
)
from neural_eq_morphing.models.folds import contributor_folds, fold_assignment, fold_names
from neural_eq_morphing.models.metrics import (
    JUDGED_METRICS,
    PROTOCOL_METRICS,
    merge_metrics,
    spec_of,
    without_shared,
)
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.models.progress import default_progress
from neural_eq_morphing.models.protocol import (
    REFERENCES,
    FoldContext,
    baseline_metrics,
    fold_context,
    measured_on,
    model_metrics,
    morph_alphas,
)
from neural_eq_morphing.models.sampling import sample_latents, spread_columns
from neural_eq_morphing.models.statistics import (
    fold_means,
    improvement,
    paired_verdicts,
    summarise,
)
from neural_eq_morphing.models.training import TrainingResult, train_members
from neural_eq_morphing.pipelines.data_processing.nodes import fit_normaliser, normalise_splits
from neural_eq_morphing.pipelines.designs import compare_seeds, resolve_configurations

logger = logging.getLogger(__name__)

#: Prefix of the columns of ``compare_seed_runs`` that become the nested runs' parameters.
PARAM_PREFIX = "param."
#: The fold name of the reproduction members (original terms, in-sample measurement).
REPRODUCTION = "reproduction"
#: The key columns of the per-fold tables.
KEYS = ("configuration", "fold", "seed")


def configurations_of(
    designs: Mapping[str, Any], compare: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Resolve the compare configurations from the designs (see ``resolve_configurations``).

    ``compare.epochs``, when set, replaces every configuration's epochs (a quick look).
    """
    configurations = resolve_configurations(designs, compare)
    if compare.get("epochs") is not None:
        for configuration in configurations.values():
            configuration["training"]["epochs"] = int(compare["epochs"])
    return configurations


def make_folds(settings_filtered: pd.DataFrame, compare: Mapping[str, Any]) -> pd.DataFrame:
    """The folds grouped by contributor (``compare.folds``): the versioned fold table.

    See :func:`~neural_eq_morphing.models.folds.contributor_folds`.
    """
    table = contributor_folds(settings_filtered, compare["folds"])
    for fold in fold_names(table):
        parts = table[table["fold"] == fold].groupby("part")["rows"].sum()
        logger.info(
            "Fold %s: %s",
            fold,
            ", ".join(
                f"{part} {int(parts.get(part, 0))} rows" for part in ("train", "validation", "test")
            ),
        )
    return table


def fit_folds(
    settings_filtered: pd.DataFrame, fold_table: pd.DataFrame, evaluation: Mapping[str, Any]
) -> dict[str, FoldContext]:
    """Per fold, the baselines and the response classifier fitted on its training part."""
    return {
        fold: fold_context(
            settings_filtered, fold_assignment(fold_table, settings_filtered, fold), evaluation
        )
        for fold in fold_names(fold_table)
    }


def fit_validation_folds(
    fold_contexts: Mapping[str, FoldContext],
    settings_filtered: pd.DataFrame,
    fold_table: pd.DataFrame,
) -> dict[str, FoldContext]:
    """Per fold, the baselines fitted on its training part, measured on its validation part.

    The validation part holds contributors neither the training nor the test part has:
    the strongest baseline of each metric is chosen there (:func:`strongest_baselines`),
    never on the results it is then compared with. What :func:`fit_folds` fitted on the
    training part is reused (:func:`~neural_eq_morphing.models.protocol.measured_on`).
    """
    out = {}
    for fold, context in fold_contexts.items():
        split = fold_assignment(fold_table, settings_filtered, fold).set_index("entry_id")["split"]
        rows = settings_filtered[settings_filtered["entry_id"].map(split) == "validation"]
        out[fold] = measured_on(context, rows)
    return out


def strongest_baselines(
    validation_contexts: Mapping[str, FoldContext], designs: Mapping[str, Any]
) -> dict[str, str]:
    """Per judged metric, the baseline with the best mean over folds on the validation parts.

    References (the mean training curve, the held-out data) are not rivals and are
    skipped, and so are folds without a validation part. Returns ``{metric: baseline}`` for
    the metrics some baseline has.
    """
    measured = {fold: c for fold, c in validation_contexts.items() if len(c.test)}
    if not measured:
        logger.warning("No fold has a validation part: no strongest baseline is chosen")
        return {}
    table = run_baselines(measured, designs)
    rivals = table[~table["configuration"].isin(REFERENCES)]
    means = rivals.groupby("configuration", sort=False).mean(numeric_only=True)
    chosen = {}
    for name, spec in JUDGED_METRICS.items():
        if name not in means.columns or not means[name].notna().any():
            continue
        values = means[name].dropna()
        score = improvement(values.to_numpy(), np.zeros(len(values)), spec.better)
        chosen[name] = str(values.index[int(np.argmax(score))])
    logger.info(
        "Strongest baselines (chosen on the validation parts): %s",
        ", ".join(f"{m} {b}" for m, b in chosen.items()),
    )
    return chosen


def run_baselines(
    fold_contexts: Mapping[str, FoldContext], designs: Mapping[str, Any]
) -> pd.DataFrame:
    """Every baseline's protocol metrics on every fold.

    Args:
        fold_contexts: Output of :func:`fit_folds`.
        designs: The designs (the PCA reconstruction baseline takes the largest latent
            size among them).

    Returns:
        One row per baseline and fold: ``configuration`` (the baseline), ``fold``,
        ``seed`` (-1: baselines have none) and the metrics it has (NaN elsewhere).
    """
    latent_dim = max(int(d["training"]["latent_dim"]) for d in designs.values())
    rows = []
    for fold, context in fold_contexts.items():
        for baseline, metrics in baseline_metrics(context, latent_dim).items():
            rows.append({"configuration": baseline, "fold": fold, "seed": -1, **metrics})
    return _ordered(pd.DataFrame(rows))


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in KEYS if k in table.columns]
    metric_columns = [m for m in PROTOCOL_METRICS if m in table.columns]
    rest = [c for c in table.columns if c not in keys and c not in metric_columns]
    return table[keys + metric_columns + rest]


def _member_tables(
    settings: pd.DataFrame, assignment: pd.DataFrame, configuration: Mapping[str, Any]
) -> tuple[dict[str, Any], tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    feature_normaliser = fit_normaliser(settings, assignment, configuration["feature_normaliser"])
    return feature_normaliser, normalise_splits(settings, assignment, feature_normaliser)


def _in_order(latent: pd.DataFrame, entry_ids: pd.Series) -> np.ndarray:
    by_entry = latent.set_index("entry_id")[latent_columns(latent)]
    return by_entry.loc[entry_ids.to_numpy()].to_numpy(np.float64)


def _draws(
    evaluated: ModelEvaluation,
    model: SemanticEQModel,
    output_space: Mapping[str, Any],
    context: FoldContext,
    evaluation: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """A member's draws for each distribution term, and its morph midpoints.

    Each term's latent points come from its region over the member's training rows
    (:mod:`~neural_eq_morphing.models.sampling`, the rule the served model samples with),
    as many as the term's first held-out half; the morph's midpoints mix independent
    draws of the pair's two regions half and half. Seeded by ``evaluation.seed``.
    """
    regions = evaluated.term_centroids.set_index("term")
    columns = latent_columns(regions)
    spreads = spread_columns(columns)
    bounded = not model.variational
    rng = np.random.default_rng([int(evaluation["seed"]), 5])

    def latents(term: str, count: int) -> np.ndarray:
        row = regions.loc[term]
        return sample_latents(
            row[columns].to_numpy(np.float64),
            row[spreads].to_numpy(np.float64),
            count,
            rng,
            bounded,
        )

    draws = {
        term: decode(model, output_space, latents(term, context.draw_count(term)))
        for term in context.distribution_terms
    }
    midpoints = None
    if context.morph_measured:
        count = context.morph_count
        first, second = (latents(term, count) for term in context.pair)
        midpoints = decode(model, output_space, 0.5 * (first + second))
    return draws, midpoints


def _protocol_metrics(
    evaluated: ModelEvaluation,
    model: SemanticEQModel,
    output_space: Mapping[str, Any],
    context: FoldContext,
    evaluation: Mapping[str, Any],
) -> dict[str, float]:
    """The protocol's metrics of one fold member, from what ``evaluate_model`` measured.

    See :func:`~neural_eq_morphing.models.protocol.model_metrics`.
    """
    latent = evaluated.latent_embeddings
    centroids = evaluated.term_centroids.set_index("term")[latent_columns(latent)]
    start, end = (centroids.loc[t].to_numpy() for t in context.pair)
    alphas = morph_alphas(evaluation["interpolation_step"])
    morph = decode(model, output_space, (1 - alphas)[:, None] * start + alphas[:, None] * end)
    presets = evaluated.generated_presets.set_index("term")[PARAMS]
    return model_metrics(
        context,
        _in_order(latent, context.train["entry_id"]),
        _in_order(latent, context.test["entry_id"]),
        {str(term): row.to_numpy() for term, row in presets.iterrows()},
        morph,
        *_draws(evaluated, model, output_space, context, evaluation),
    )


def fold_row(
    keys: Mapping[str, Any], protocol: Mapping[str, float], evaluated: Mapping[str, float]
) -> dict[str, Any]:
    """One row of ``compare_fold_metrics``: the keys, the protocol's metrics, the evaluation's.

    A metric both measure (``generation_rms_db``, ``reconstruction_rms_db.mean``) is kept
    once, after checking the two agree; any other name given twice is an error
    (:func:`~neural_eq_morphing.models.metrics.merge_metrics`).
    """
    return merge_metrics(keys, protocol, without_shared(evaluated, protocol))


@dataclass(frozen=True)
class _Trained:
    """One trained member of a configuration's ensemble and what it was trained on."""

    configuration: str
    fold: str
    seed: int
    feature_normaliser: dict[str, Any]
    tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
    model: SemanticEQModel
    history: pd.DataFrame


def _member_result(result: TrainingResult, member: int) -> tuple[SemanticEQModel, pd.DataFrame]:
    """The model and history (without the ``member`` column) of one ensemble member."""
    history = result.history[result.history["member"] == member].drop(columns="member")
    return result.models[member], history


def _measure(
    member: _Trained,
    *,
    configs: Mapping[str, TrainingConfig],
    settings: pd.DataFrame,
    reproduction_settings: pd.DataFrame,
    fold_contexts: Mapping[str, FoldContext],
    evaluation: Mapping[str, Any],
) -> tuple[ModelEvaluation, dict[str, float]]:
    """``evaluate_model`` of one member, and its protocol metrics (none for reproduction)."""
    config = configs[member.configuration]
    output_space = decoder_normaliser(
        member.feature_normaliser, config.decoder_head, config.recon_in_consistent_units
    )
    reproduction = member.fold == REPRODUCTION
    evaluated = evaluate_model(
        member.model,
        member.feature_normaliser,
        output_space,
        member.tables,
        reproduction_settings if reproduction else settings,
        member.history,
        evaluation,
    )
    if reproduction:
        return evaluated, {}
    protocol = _protocol_metrics(
        evaluated, member.model, output_space, fold_contexts[member.fold], evaluation
    )
    return evaluated, protocol


def ensembles(configs: Mapping[str, TrainingConfig]) -> list[list[str]]:
    """The configurations that train as one ensemble, in order of first appearance.

    Configurations whose training differs only in the fields a member may have of its own
    (:data:`~neural_eq_morphing.models.training.MEMBER_FIELDS`: the decoder head within
    normalised space, the perceptual weight, the loss's units, learning rate, contrastive
    weights, LR schedule) share one batched ensemble: a bigger
    ensemble trains faster per model, and each member still trains as it would alone.
    """
    shared = [name for name in TrainingConfig.model_fields if name not in (*MEMBER_FIELDS, "seeds")]
    families: dict[tuple, list[str]] = {}
    for name, config in configs.items():
        key = tuple(repr(getattr(config, field)) for field in shared)
        # Heads mix only in normalised space (normalised and separate).
        key += (config.decoder_head == "plugin_units",)
        families.setdefault(key, []).append(name)
    return list(families.values())


def run_configurations(
    settings_filtered: pd.DataFrame,
    fold_table: pd.DataFrame,
    fold_contexts: Mapping[str, FoldContext],
    reproduction_settings: pd.DataFrame,
    reproduction_split: pd.DataFrame,
    configurations: Mapping[str, Mapping[str, Any]],
    evaluation: Mapping[str, Any],
    compare: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Train and measure every configuration on every fold and seed.

    A configuration has one member per fold and seed (each with its fold's training and
    validation rows and its fold's feature normaliser) and, for a design the original
    write-up makes claims about (``compare.claimed``: Log 1 and Log 2), one reproduction
    member per seed trained on the original terms' training split and measured
    in-sample. The configurations of one :func:`ensembles` family
    (e.g. Log 2 and its ablations) train together as one batched ensemble, each member
    with its own configuration; their time is shared out by members.

    Args:
        settings_filtered: The descriptor settings in plug-in units.
        fold_table: Output of :func:`make_folds`.
        fold_contexts: Output of :func:`fit_folds`.
        reproduction_settings: The settings with the original write-up's terms.
        reproduction_split: Their contributor-grouped split (the project's ``split``).
        configurations: Output of :func:`configurations_of`.
        evaluation: The evaluation parameters.
        compare: ``n_seeds`` and ``first_seed`` (seeds per fold), ``claimed``.

    Returns:
        The fold metrics (one row per configuration, fold and seed: the protocol metrics,
        then every metric of ``evaluate_model``); the reproduction metrics (one row per
        design and seed, ``evaluate_model``'s metrics on the original protocol); the
        per-epoch histories of every member (``configuration``, ``fold``, ``seed``, …);
        per configuration the examples the report draws (the first fold's first seed)
        and timings; and the timings as MLflow metrics.
    """
    seeds = compare_seeds(compare)
    folds = fold_names(fold_table)
    fold_rows, reproduction_rows, histories, examples = [], [], [], {}
    # The reproduction is of the original write-up's figures: its designs only.
    claimed = set(compare.get("claimed") or {})
    configs = {
        name: TrainingConfig.from_dict(configuration["training"])
        for name, configuration in configurations.items()
    }
    for family in ensembles(configs):
        started = time.perf_counter()
        tasks: list[tuple[str, str, int, dict[str, Any], tuple]] = []
        for name in family:
            configuration = configurations[name]
            parts = [
                (fold, fold_assignment(fold_table, settings_filtered, fold), settings_filtered)
                for fold in folds
            ]
            if name == configuration["design"] and name in claimed:
                parts.append((REPRODUCTION, reproduction_split, reproduction_settings))
            for fold, assignment, rows in parts:
                normaliser, tables = _member_tables(rows, assignment, configuration)
                tasks += [(name, fold, seed, normaliser, tables) for seed in seeds]
        members = [
            replace(member_data(tables[0], tables[1], normaliser, seed), config=configs[name])
            for name, _, seed, normaliser, tables in tasks
        ]
        config = configs[family[0]]
        logger.info(
            "Comparing %s as one ensemble: %d members (%d folds x %d seeds each, "
            "reproduction for the write-up's designs), %d epochs",
            ", ".join(family),
            len(members),
            len(folds),
            len(seeds),
            config.epochs,
        )
        # Members of similar size side by side: the thread groups are contiguous slices,
        # and a group's epoch takes as many steps as its largest member needs.
        order = sorted(range(len(members)), key=lambda k: len(members[k].train_features))
        result = train_members(
            config,
            [members[k] for k in order],
            progress=default_progress(f"compare {'+'.join(family)}"),
        )
        position = {k: j for j, k in enumerate(order)}
        trained = [
            _Trained(name, fold, seed, normaliser, tables, *_member_result(result, position[k]))
            for k, (name, fold, seed, normaliser, tables) in enumerate(tasks)
        ]
        for member in trained:
            evaluated, protocol = _measure(
                member,
                configs=configs,
                settings=settings_filtered,
                reproduction_settings=reproduction_settings,
                fold_contexts=fold_contexts,
                evaluation=evaluation,
            )
            name = member.configuration
            keys = {"configuration": name, "fold": member.fold, "seed": member.seed}
            history = member.history
            histories.append(history.assign(configuration=name, fold=member.fold))
            if member.fold == REPRODUCTION:
                reproduction_rows.append(merge_metrics(keys, evaluated.metrics))
                continue
            fold_rows.append(fold_row(keys, protocol, evaluated.metrics))
            if name not in examples:
                examples[name] = {
                    "fold": member.fold,
                    "seed": member.seed,
                    "presets": evaluated.generated_presets,
                    "morph": evaluated.morph_table,
                    "latent": evaluated.latent_embeddings,
                    "history": history,
                }
        wall_s = time.perf_counter() - started
        for name in family:
            # The ensemble's time, shared out by members: the configurations trained at once.
            count = sum(task[0] == name for task in tasks)
            examples[name].update(
                wall_s=wall_s * count / len(tasks),
                train_s=result.timing.train_s * count / len(tasks),
                members=count,
            )
        logger.info(
            "Compared %s in %.1f s (training %.1f s)",
            ", ".join(family),
            wall_s,
            result.timing.train_s,
        )
    timings = {
        f"{name}.{key}": {"value": float(example[key]), "step": 0}
        for name, example in examples.items()
        for key in ("wall_s", "train_s")
    }
    history_table = pd.concat(histories, ignore_index=True)
    front = ["configuration", "fold"]
    history_table = history_table[front + [c for c in history_table.columns if c not in front]]
    reproduction = pd.DataFrame(
        reproduction_rows, columns=None if reproduction_rows else list(KEYS)
    )
    return _ordered(pd.DataFrame(fold_rows)), reproduction, history_table, examples, timings


def _flat_params(prefix: str, value: Any, into: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flat_params(f"{prefix}.{key}", inner, into)
    else:
        into[prefix] = str(value)


def seed_runs(
    fold_metrics: pd.DataFrame, configurations: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """The per-member metrics with each run's parameters, for one nested MLflow run each.

    Parameters: ``design``, ``fold``, ``seed`` and the configuration's resolved
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
            {
                **params[row.configuration],
                f"{PARAM_PREFIX}fold": str(row.fold),
                f"{PARAM_PREFIX}seed": str(row.seed),
            }
            for row in fold_metrics[["configuration", "fold", "seed"]].itertuples(index=False)
        ],
        index=fold_metrics.index,
    )
    return pd.concat([fold_metrics, extra], axis=1)


def summarise_comparison(
    fold_metrics: pd.DataFrame, baseline_fold_metrics: pd.DataFrame, compare: Mapping[str, Any]
) -> pd.DataFrame:
    """Mean and interval over folds (seeds averaged within a fold) of every metric.

    Models and baselines in one long table: ``configuration``, ``metric``, ``mean``,
    ``ci_low``, ``ci_high``, ``n_folds``, ``n_seeds``. The protocol metrics come first,
    then ``evaluate_model``'s (models only). A metric with a bounded range in the registry
    gets a bootstrap interval inside it (``compare.statistics.seed``), any other a
    t-interval.
    """
    statistics = compare["statistics"]
    metrics = list(PROTOCOL_METRICS) + [
        c for c in fold_metrics.columns if c not in PROTOCOL_METRICS and c not in KEYS
    ]
    bounded = [name for name in metrics if spec_of(name).bounds is not None]
    table = pd.concat([fold_metrics, baseline_fold_metrics], ignore_index=True)
    return summarise(
        table, metrics, float(statistics["confidence"]), bounded, int(statistics["seed"])
    )


def comparisons(
    configurations: Mapping[str, Mapping[str, Any]],
    baseline_fold_metrics: pd.DataFrame,
    reference_design: str | None = None,
) -> list[dict[str, str]]:
    """The verdicts to draw, each with its family (Holm's correction works within one).

    Each configuration against every baseline that has the metric (family
    ``<configuration> · <metric family>``), each ablation against its design on every
    protocol metric (family ``<ablation> vs <design>``), and every other design against
    ``reference_design`` (Log 2) on every protocol metric (family ``<design> vs
    <reference>``), when it is among the compared designs (``compare.designs`` may leave
    it out).
    """
    designs = [n for n, c in configurations.items() if n == c["design"]]
    if reference_design not in designs:
        reference_design = None
    out = []
    has = {
        metric: list(
            dict.fromkeys(
                baseline_fold_metrics.loc[baseline_fold_metrics[metric].notna(), "configuration"]
            )
        )
        for metric in JUDGED_METRICS
        if metric in baseline_fold_metrics.columns
    }
    for name, configuration in configurations.items():
        for metric, spec in JUDGED_METRICS.items():
            for baseline in has.get(metric, []):
                out.append(
                    {
                        "family": f"{name} · {spec.family}",
                        "configuration": name,
                        "against": baseline,
                        "metric": metric,
                    }
                )
        against = configuration["design"]
        if name == against:  # a design: against the reference design
            against = reference_design if name != reference_design else None
        if against is None:
            continue
        for metric in JUDGED_METRICS:
            out.append(
                {
                    "family": f"{name} vs {against}",
                    "configuration": name,
                    "against": against,
                    "metric": metric,
                }
            )
    return out


def judge_comparison(
    fold_metrics: pd.DataFrame,
    baseline_fold_metrics: pd.DataFrame,
    configurations: Mapping[str, Mapping[str, Any]],
    compare: Mapping[str, Any],
) -> pd.DataFrame:
    """Paired differences by fold with Holm-corrected verdicts (see ``paired_verdicts``)."""
    statistics = compare["statistics"]
    table = fold_means(
        pd.concat([fold_metrics, baseline_fold_metrics], ignore_index=True), list(JUDGED_METRICS)
    )
    return paired_verdicts(
        table,
        comparisons(configurations, baseline_fold_metrics, compare.get("reference_design")),
        {name: spec.better for name, spec in JUDGED_METRICS.items()},
        alpha=float(statistics["alpha"]),
        power=float(statistics["power"]),
    )


def _metric(value: float) -> dict[str, float]:
    return {"value": float(value), "step": 0}


def _reproduction_metrics(reproduction: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``<design>.reproduction.<metric>.mean`` / ``.std`` over the reproduction's seeds."""
    metrics: dict[str, dict[str, float]] = {}
    if reproduction.empty:
        return metrics
    columns = [c for c in reproduction.columns if c not in KEYS]
    grouped = reproduction.groupby("configuration", sort=False)[columns]
    for statistic, table in (("mean", grouped.mean()), ("std", grouped.std())):
        for design, values in table.iterrows():
            for metric, value in values.items():
                if np.isfinite(value):
                    metrics[f"{design}.reproduction.{metric}.{statistic}"] = _metric(value)
    return metrics


def comparison_metrics(
    summary: pd.DataFrame,
    verdicts: pd.DataFrame,
    fold_metrics: pd.DataFrame,
    baseline_fold_metrics: pd.DataFrame,
    reproduction: pd.DataFrame,
) -> dict[str, dict[str, float]]:
    """Every number of the report as an MLflow metric of the comparison's parent run.

    ``<configuration>.<metric>.mean`` / ``.ci_low`` / ``.ci_high``; per fold
    ``<configuration>.<fold>.<metric>`` (the mean over its seeds) for the protocol
    metrics; ``<configuration>.vs.<against>.<metric>.difference`` / ``.ci_low`` /
    ``.ci_high`` (adjusted as the verdict) / ``.p_holm`` / ``.detectable``; and the
    reproduction's in-sample metrics,
    ``<design>.reproduction.<metric>.mean`` / ``.std`` (over seeds).
    """
    metrics: dict[str, dict[str, float]] = {}
    for row in summary.itertuples(index=False):
        for statistic in ("mean", "ci_low", "ci_high"):
            value = getattr(row, statistic)
            if np.isfinite(value):
                metrics[f"{row.configuration}.{row.metric}.{statistic}"] = _metric(value)
    per_fold = fold_means(
        pd.concat([fold_metrics, baseline_fold_metrics], ignore_index=True),
        list(PROTOCOL_METRICS),
    )
    for row in per_fold.to_dict("records"):
        for metric in PROTOCOL_METRICS:
            value = row.get(metric)
            if value is not None and np.isfinite(value):
                metrics[f"{row['configuration']}.{row['fold']}.{metric}"] = _metric(value)
    metrics.update(_reproduction_metrics(reproduction))
    for row in verdicts.itertuples(index=False):
        prefix = f"{row.configuration}.vs.{row.against}.{row.metric}"
        for statistic in ("difference", "ci_low", "ci_high", "p_holm", "detectable"):
            value = getattr(row, statistic)
            if np.isfinite(value):
                metrics[f"{prefix}.{statistic}"] = _metric(value)
    return metrics
