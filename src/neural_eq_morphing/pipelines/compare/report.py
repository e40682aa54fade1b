"""The comparison report: measured numbers in Python, words in a Jinja2 template.

Every number in the report comes from the comparison's metrics (which are also logged to
MLflow); every sentence in "Findings" is filled from those numbers. The numbers, tables,
verdicts and figures are computed here and gathered into one plain context
(:func:`report_context`); the headings and prose live in
``templates/compare_report.md.j2``, rendered with ``StrictUndefined`` so that a value the
template names but the context lacks is an error, not a silently empty cell. The HTML page
is the same Markdown rendered by markdown-it-py, so the two formats cannot drift apart.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markdown_it import MarkdownIt
from matplotlib.figure import Figure

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.eq.response import clamped_response_db, frequency_grid
from neural_eq_morphing.models.folds import fold_summary
from neural_eq_morphing.models.metrics import JUDGED_METRICS, PROTOCOL_METRICS
from neural_eq_morphing.models.protocol import (
    BASELINE_LABELS,
    BASELINE_SAMPLERS,
    MORPH_DISTRIBUTION,
    REFERENCES,
)
from neural_eq_morphing.models.statistics import BETTER, WORSE, fold_means, improvement
from neural_eq_morphing.pipelines.designs import compare_seeds
from neural_eq_morphing.pipelines.evaluation.plots import plot_training_curves

PARAMS = list(PARAMETER_NAMES)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _number(value: float, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    if abs(value) >= 1e5:
        return f"{value:.3g}"
    return f"{value:.{digits}f}"


def interval(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``mean [low, high]`` as text (``mean`` alone when the interval is undefined)."""
    if mean is None or not np.isfinite(mean):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return _number(mean, digits)
    return f"{_number(mean, digits)} [{_number(low, digits)}, {_number(high, digits)}]"


def _label(name: str, labels: Mapping[str, str]) -> str:
    return labels.get(name, BASELINE_LABELS.get(name, name))


class Summary:
    """Look-ups in the long summary (configuration, metric, mean, ci_low, ci_high, …)."""

    def __init__(self, summary: pd.DataFrame) -> None:
        self._table = summary.set_index(["configuration", "metric"])

    def has(self, configuration: str, metric: str) -> bool:
        """Whether the configuration has a value of the metric."""
        return (configuration, metric) in self._table.index

    def mean(self, configuration: str, metric: str) -> float:
        """Mean over folds."""
        if not self.has(configuration, metric):
            return float("nan")
        return float(self._table.loc[(configuration, metric), "mean"])

    def cell(self, configuration: str, metric: str, digits: int = 3) -> str:
        """``mean [low, high]`` as text."""
        if not self.has(configuration, metric):
            return "n/a"
        row = self._table.loc[(configuration, metric)]
        return interval(float(row["mean"]), float(row["ci_low"]), float(row["ci_high"]), digits)


def _best(summary: Summary, names: Sequence[str], metric: str) -> str | None:
    """The name with the best mean on ``metric`` (``None`` when none has a value)."""
    candidates = [n for n in names if np.isfinite(summary.mean(n, metric))]
    if not candidates:
        return None
    better = PROTOCOL_METRICS[metric].better
    score = {
        n: improvement(np.array([summary.mean(n, metric)]), np.array([0.0]), better)[0]
        for n in candidates
    }
    return max(candidates, key=lambda n: score[n])


def _verdict_text(row: Any) -> str:
    text = str(row["verdict"])
    return f"{text} (borderline)" if bool(row["borderline"]) else text


def _verdict_of(verdicts: pd.DataFrame, configuration: str, against: str, metric: str) -> Any:
    rows = verdicts[
        (verdicts["configuration"] == configuration)
        & (verdicts["against"] == against)
        & (verdicts["metric"] == metric)
    ]
    return None if rows.empty else rows.iloc[0]


def verdict_table(
    summary: Summary,
    verdicts: pd.DataFrame,
    models: Sequence[str],
    strongest: Mapping[str, str],
    labels: Mapping[str, str],
) -> pd.DataFrame:
    """Per protocol metric: the models and the strongest baseline, with the verdicts.

    Each model's mean [CI], the strongest baseline's, and each model's paired difference
    from it (positive = the model is better) with the verdict.
    """
    records = []
    for metric, baseline in strongest.items():
        record = {"metric": metric, "better": PROTOCOL_METRICS[metric].better}
        for model in models:
            record[_label(model, labels)] = summary.cell(model, metric)
        record["strongest baseline"] = (
            f"{_label(baseline, labels)}: {summary.cell(baseline, metric)}"
        )
        for model in models:
            row = _verdict_of(verdicts, model, baseline, metric)
            record[f"{model} vs baseline"] = _difference_text(row)
        records.append(record)
    return pd.DataFrame.from_records(records)


def verdict_sentences(
    verdicts: pd.DataFrame, models: Sequence[str], labels: Mapping[str, str]
) -> list[str]:
    """One sentence per model from its verdicts against the baselines."""
    sentences = []
    for model in models:
        rows = verdicts[(verdicts["configuration"] == model) & ~verdicts["against"].isin(models)]
        rows = rows[~rows["against"].isin(REFERENCES)]
        if rows.empty:
            continue
        by_metric = rows.groupby("metric", sort=False)["verdict"].agg(list)
        beats_all = [m for m, v in by_metric.items() if all(x == BETTER for x in v)]
        loses = {
            m: [
                _label(a, labels)
                for a in rows[(rows["metric"] == m) & (rows["verdict"] == WORSE)]["against"]
            ]
            for m in by_metric.index
        }
        loses = {m: names for m, names in loses.items() if names}
        undecided = [m for m in by_metric.index if m not in beats_all and m not in loses]
        parts = [f"**{_label(model, labels)}** across contributors:"]
        parts.append(
            f"better than every baseline on {', '.join(beats_all)}."
            if beats_all
            else "better than every baseline on no metric."
        )
        if undecided:
            parts.append(
                f"No detectable difference from at least one baseline on {', '.join(undecided)}."
            )
        if loses:
            parts.append(
                "Worse on "
                + "; ".join(f"{m} (than {', '.join(names)})" for m, names in loses.items())
                + "."
            )
        sentences.append(" ".join(parts))
    return sentences


def family_tables(
    summary: Summary, names: Sequence[str], labels: Mapping[str, str]
) -> dict[str, pd.DataFrame]:
    """Per metric family, a table: rows the models and baselines, cells ``mean [CI]``."""
    tables = {}
    for family in dict.fromkeys(spec.family for spec in JUDGED_METRICS.values()):
        metrics = [m for m, spec in PROTOCOL_METRICS.items() if spec.family == family]
        rows = [n for n in names if any(summary.has(n, m) for m in metrics)]
        if not rows:
            continue
        tables[family] = pd.DataFrame(
            [{"": _label(n, labels), **{m: summary.cell(n, m) for m in metrics}} for n in rows]
        )
    return tables


def per_fold_table(
    per_fold: pd.DataFrame,
    metric: str,
    names: Sequence[str],
    folds: pd.DataFrame,
    labels: Mapping[str, str],
) -> pd.DataFrame:
    """One metric per fold (mean over seeds) for the named models and baselines."""
    table = per_fold.pivot_table(index="fold", columns="configuration", values=metric, dropna=False)
    table = table.reindex(index=list(folds["fold"]), columns=[n for n in names if n in table])
    out = folds[["fold", "held_out", "test_rows"]].copy().reset_index(drop=True)
    for name in table.columns:
        out[_label(name, labels)] = [_number(v) for v in table[name].to_numpy()]
    return out


def per_fold_figure(
    per_fold: pd.DataFrame,
    metrics: Sequence[str],
    names: Sequence[str],
    folds: Sequence[str],
    labels: Mapping[str, str],
) -> Figure:
    """Per-fold values of a few metrics: one panel per metric, one line per name."""
    figure = Figure(figsize=(12, 3.8), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False).ravel()
    positions = np.arange(len(folds))
    for axis, metric in zip(axes, metrics, strict=True):
        table = per_fold.pivot_table(
            index="fold", columns="configuration", values=metric, dropna=False
        )
        table = table.reindex(index=list(folds))
        for name in names:
            if name in table and table[name].notna().any():
                axis.plot(positions, table[name].to_numpy(), marker="o", label=_label(name, labels))
        axis.set_xticks(positions, list(folds), rotation=60, fontsize=7)
        axis.set_title(f"{metric} ({PROTOCOL_METRICS[metric].better} is better)", fontsize=9)
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    return figure


def ablation_table(
    verdicts: pd.DataFrame,
    summary: Summary,
    configurations: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
) -> pd.DataFrame:
    """Each ablation against its design on the protocol metrics, paired by fold.

    Difference [CI] (positive = the ablation is better) and verdict.
    """
    records = []
    for name, spec in configurations.items():
        if name == spec["design"]:
            continue
        for metric in JUDGED_METRICS:
            row = _verdict_of(verdicts, name, spec["design"], metric)
            if row is None:
                continue
            records.append(
                {
                    "ablation": _label(name, labels),
                    "metric": metric,
                    "ablation value": summary.cell(name, metric),
                    "design value": summary.cell(spec["design"], metric),
                    "difference": interval(row["difference"], row["ci_low"], row["ci_high"]),
                    "verdict": _verdict_text(row),
                }
            )
    return pd.DataFrame.from_records(records)


def reference_table(
    verdicts: pd.DataFrame,
    summary: Summary,
    designs: Sequence[str],
    reference: str,
    labels: Mapping[str, str],
) -> pd.DataFrame:
    """Every other design against the reference design (Log 2), per protocol metric.

    Rows: metrics; columns: the reference's mean [CI], then per design its paired
    difference [CI] from the reference (positive = the design is better) and verdict.
    """
    others = [d for d in designs if d != reference]
    records = []
    for metric, spec in JUDGED_METRICS.items():
        record = {
            "metric": metric,
            "better": spec.better,
            _label(reference, labels): summary.cell(reference, metric),
        }
        for design in others:
            row = _verdict_of(verdicts, design, reference, metric)
            record[_label(design, labels)] = _difference_text(row)
        records.append(record)
    return pd.DataFrame.from_records(records)


def best_design_table(
    verdicts: pd.DataFrame,
    summary: Summary,
    designs: Sequence[str],
    strongest: Mapping[str, str],
    reference: str | None,
    labels: Mapping[str, str],
) -> pd.DataFrame:
    """Per protocol metric: the design with the best mean, and how it fares.

    The best design's mean [CI], its verdict against the metric's strongest baseline and
    against the reference design (Log 2).
    """
    records = []
    for metric, baseline in strongest.items():
        best = _best(summary, designs, metric)
        if best is None:
            continue
        against_baseline = _verdict_of(verdicts, best, baseline, metric)
        against_reference = (
            None if reference is None else _verdict_of(verdicts, best, reference, metric)
        )
        records.append(
            {
                "metric": metric,
                "better": PROTOCOL_METRICS[metric].better,
                "best design": _label(best, labels),
                "its value": summary.cell(best, metric),
                "vs strongest baseline": (
                    f"{_label(baseline, labels)}: {_difference_text(against_baseline)}"
                ),
                f"vs {_label(reference, labels) if reference else 'reference'}": (
                    "(is the reference)"
                    if best == reference
                    else _difference_text(against_reference)
                ),
            }
        )
    return pd.DataFrame.from_records(records)


#: The word-only optimum of generation (a curve, not a setting).
OPTIMUM = "mean_curve"
#: The distribution references, in the order the report shows them.
DISTRIBUTION_REFERENCES = ("held_out_half", *BASELINE_SAMPLERS)
DISTRIBUTION_METRICS = tuple(
    m for m, spec in PROTOCOL_METRICS.items() if spec.family == "distribution"
)
MORPH_DISTRIBUTION_METRICS = tuple(f"morph_{m}" for m in MORPH_DISTRIBUTION)


def _adjusted(row: Any) -> str:
    """``difference [adjusted CI]`` of one verdict row (``n/a`` without one)."""
    if row is None:
        return "n/a"
    return interval(row["difference"], row["ci_low"], row["ci_high"])


def generation_table(
    summary: Summary,
    verdicts: pd.DataFrame,
    designs: Sequence[str],
    labels: Mapping[str, str],
) -> pd.DataFrame:
    """Each design's generation error beside the word-only optimum and the noise floor.

    Per design: ``generation_rms_db`` [interval over folds]; its excess over the mean
    preset and over the mean training curve (the word-only optimum), each a paired
    difference in dB with its Holm-adjusted interval (positive = the design's error is
    larger); and the smallest difference the protocol could detect against the optimum.
    The last rows are the references themselves and the split-half floor.
    """
    records = []
    for design in designs:
        record = {
            "": _label(design, labels),
            "generation_rms_db": summary.cell(design, "generation_rms_db"),
        }
        for against in ("mean_preset", OPTIMUM):
            row = _verdict_of(verdicts, design, against, "generation_rms_db")
            excess = (
                None
                if row is None
                else {
                    "difference": -row["difference"],
                    "ci_low": -row["ci_high"],
                    "ci_high": -row["ci_low"],
                }
            )
            record[f"excess over {_label(against, labels)} (dB)"] = _adjusted(excess)
        row = _verdict_of(verdicts, design, OPTIMUM, "generation_rms_db")
        record["smallest detectable (dB)"] = "n/a" if row is None else _number(row["detectable"])
        records.append(record)
    for name in ("mean_preset", OPTIMUM):
        records.append(
            {"": _label(name, labels), "generation_rms_db": summary.cell(name, "generation_rms_db")}
        )
    records.append(
        {
            "": "split-half floor of the held-out curves",
            "generation_rms_db": summary.cell("held_out_half", "generation_floor_db"),
        }
    )
    return pd.DataFrame.from_records(records).fillna("")


def generation_sentences(
    summary: Summary,
    verdicts: pd.DataFrame,
    designs: Sequence[str],
    labels: Mapping[str, str],
) -> list[str]:
    """Per design: does it match the word-only optimum, and within how much?

    "Matches within x dB" when its Holm-corrected verdict against the mean training curve
    is "no detectable difference", x being the upper end of the adjusted interval of its
    excess; "does not" when it is worse, with the excess; "below the optimum" when it is
    detectably better (possible on particular folds, not in expectation). A generator that
    sees only the word cannot beat that optimum in expectation, so this is the generation
    question a design can answer.
    """
    floor = summary.mean("held_out_half", "generation_floor_db")
    sentences = []
    for design in designs:
        row = _verdict_of(verdicts, design, OPTIMUM, "generation_rms_db")
        if row is None:
            continue
        excess = -row["difference"]
        upper = -row["ci_low"]
        name = _label(design, labels)
        if row["verdict"] == BETTER:
            text = (
                f"**{name} comes out below the word-only optimum**: its generation error is "
                f"{_number(-excess)} dB [{_number(row['ci_low'])}, {_number(row['ci_high'])}] "
                "under the mean training curve's (the optimum holds in expectation over new "
                "people; these folds' held-out people may differ from the training ones)"
            )
        elif row["verdict"] == WORSE:
            text = (
                f"**{name} does not match the word-only optimum**: its generation error is "
                f"{_number(excess)} dB [{_number(-row['ci_high'])}, {_number(upper)}] above "
                "the mean training curve's"
            )
        else:
            text = (
                f"**{name} matches the word-only optimum within {_number(upper)} dB** (its "
                f"excess over the mean training curve: {_number(excess)} dB, adjusted "
                f"interval [{_number(-row['ci_high'])}, {_number(upper)}])"
            )
        sentences.append(
            f"{text}; the protocol detects differences from about "
            f"{_number(row['detectable'])} dB at Holm's strictest level; "
            f"the held-out curves' own split-half noise is {_number(floor)} dB."
        )
    return sentences


def distribution_table(
    summary: Summary,
    names: Sequence[str],
    metrics: Sequence[str],
    labels: Mapping[str, str],
) -> pd.DataFrame:
    """Designs and references on the distribution metrics: ``mean [interval]`` cells."""
    rows = [n for n in names if any(summary.has(n, m) for m in metrics)]
    return pd.DataFrame(
        [{"": _label(n, labels), **{m: summary.cell(n, m) for m in metrics}} for n in rows]
    )


def _difference_text(row: Any) -> str:
    """``difference [CI]: verdict`` of one verdict row (``n/a`` without one)."""
    if row is None:
        return "n/a"
    return f"{interval(row['difference'], row['ci_low'], row['ci_high'])}: {_verdict_text(row)}"


def question_answers(
    verdicts: pd.DataFrame,
    summary: Summary,
    designs: Sequence[str],
    questions: Sequence[Mapping[str, str]],
    labels: Mapping[str, str],
) -> list[str]:
    """One plain answer per headline question: does any design beat that baseline there?

    A design beats the baseline when its Holm-corrected verdict is "better" (the paired
    interval excludes zero in the design's favour).
    """
    answers = []
    for question in questions:
        metric, baseline = question["metric"], question["baseline"]
        rows = verdicts[
            (verdicts["against"] == baseline)
            & (verdicts["metric"] == metric)
            & verdicts["configuration"].isin(designs)
        ]
        if rows.empty:
            answers.append(f"**{metric} against the {_label(baseline, labels)}:** not measured.")
            continue
        winners = [r for _, r in rows.iterrows() if r["verdict"] == BETTER]
        closest = max(
            (r for _, r in rows.iterrows()), key=lambda r: (r["difference"], -r["p_holm"])
        )
        head = f"**Does any design beat the {_label(baseline, labels)} on {metric}?** "
        baseline_value = summary.cell(baseline, metric)
        if winners:
            answers.append(
                head
                + "Yes: "
                + "; ".join(
                    f"{_label(r['configuration'], labels)} ({_difference_text(r)})" for r in winners
                )
                + f". The {_label(baseline, labels)}: {baseline_value}."
            )
        else:
            answers.append(
                head + f"No. The {_label(baseline, labels)}: {baseline_value}; the closest design "
                f"is {_label(closest['configuration'], labels)} at "
                f"{summary.cell(closest['configuration'], metric)}, difference "
                f"{_difference_text(closest)}."
            )
    return answers


def all_verdicts_table(verdicts: pd.DataFrame, labels: Mapping[str, str]) -> pd.DataFrame:
    """Every verdict: configuration, metric, against, difference [CI], Holm p, verdict."""
    return pd.DataFrame(
        [
            {
                "configuration": _label(row["configuration"], labels),
                "metric": row["metric"],
                "against": _label(row["against"], labels),
                "folds": int(row["n_folds"]),
                "difference": interval(row["difference"], row["ci_low"], row["ci_high"]),
                "Holm p": _number(row["p_holm"], 4),
                "verdict": _verdict_text(row),
            }
            for _, row in verdicts.iterrows()
        ]
    )


def range_guarantee(training: Mapping[str, Any], feature_normaliser: Mapping[str, Any]) -> str:
    """Why a configuration's decoded settings are (or are not) inside the plug-in limits.

    A ``normalised`` head is a sigmoid in min-max space: through the min-max inverse it
    cannot leave the limits. The ``separate`` heads are clipped to [0, 1] of that space
    in eval mode (the diagnosis's safety net), so they cannot either. A ``plugin_units``
    head is bounded to the limits in plug-in units (tanh and sigmoids scaled to the
    ranges): with its loss in consistent units its
    output is used as it is, so it cannot leave them either; otherwise (Log 1) the
    z-score inverse is applied to it, and nothing bounds the result.
    """
    head = training["decoder_head"]
    if head == "separate":
        return "guaranteed by construction: separate heads, hard-clipped to the limits"
    if head == "normalised" and feature_normaliser.get("kind") == "minmax":
        return "guaranteed by construction: sigmoid output through the min-max inverse"
    if head == "plugin_units" and training.get("recon_in_consistent_units"):
        return "guaranteed by construction: a head bounded in plug-in units, used as it is"
    return "not guaranteed: the output goes through the z-score inverse, unbounded"


def construction_table(
    summary: Summary, configurations: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]
) -> pd.DataFrame:
    """Range validity of generated settings, and whether the design guarantees it."""
    return pd.DataFrame.from_records(
        [
            {
                "configuration": _label(name, labels),
                **{
                    f"valid share: {kind}": summary.cell(name, f"valid_share.{kind}")
                    for kind in ("term_centroids", "interpolations", "random_latents")
                },
                "why": range_guarantee(spec["training"], spec["feature_normaliser"]),
            }
            for name, spec in configurations.items()
        ]
    )


#: How each claimed figure of the original write-up is judged reproduced.
REPRODUCTION_CRITERIA: dict[str, tuple[str, str]] = {
    "silhouette": ("silhouette.in_sample.latent", "same sign"),
    "davies_bouldin": ("davies_bouldin.in_sample.latent", "within a factor of 2"),
    "max_frequency_hz": ("max_frequency_hz", "same side of the 20 kHz limit"),
    "valid_share": ("valid_share.random_latents", "within 0.01"),
}


def _reproduced(criterion: str, claimed: float, measured: float) -> bool:
    if criterion == "same sign":
        return bool(np.sign(claimed) == np.sign(measured))
    if criterion == "within a factor of 2":
        return bool(0.5 <= measured / claimed <= 2.0)
    if criterion == "same side of the 20 kHz limit":
        return bool((claimed > 20_000) == (measured > 20_000))
    return bool(abs(claimed - measured) <= 0.01)


def reproduction_table(
    reproduction: pd.DataFrame,
    claimed: Mapping[str, Mapping[str, float]],
    labels: Mapping[str, str],
) -> pd.DataFrame:
    """The original write-up's figures against this run's, on the original protocol."""
    records = []
    for design, figures in claimed.items():
        rows = reproduction[reproduction["configuration"] == design]
        for figure, value in figures.items():
            column, criterion = REPRODUCTION_CRITERIA[figure]
            if rows.empty or column not in rows:
                continue
            measured = rows[column].to_numpy(np.float64)
            spread = f" ± {_number(measured.std(ddof=1))}" if len(measured) > 1 else ""
            records.append(
                {
                    "design": _label(design, labels),
                    "figure": figure,
                    "claimed": _number(float(value)),
                    "measured (in-sample, mean ± sd over seeds)": _number(measured.mean()) + spread,
                    "criterion": criterion,
                    "reproduced": "yes"
                    if _reproduced(criterion, float(value), measured.mean())
                    else "no",
                }
            )
    return pd.DataFrame.from_records(records)


def generated_terms_figure(
    examples: Mapping[str, Any],
    models: Sequence[str],
    fold_context: Any,
    labels: Mapping[str, str],
    evaluation: Mapping[str, Any],
) -> Figure:
    """The pair's generated curves of each model against the fold's data.

    Each model's example member (fold and seed) against the held-out mean curve and the
    mean training preset of the fold.
    """
    response = evaluation["response"]
    grid = frequency_grid(int(response["n_points"]), response["f_min"], response["f_max"])
    terms = list(fold_context.pair)
    figure = Figure(figsize=(11, 4), layout="constrained")
    axes = figure.subplots(1, len(terms), sharey=True, squeeze=False).ravel()
    test_curves = clamped_response_db(fold_context.test[PARAMS].to_numpy(), **response)
    for axis, term in zip(axes, terms, strict=True):
        rows = (fold_context.test["term"] == term).to_numpy()
        axis.plot(
            grid,
            test_curves[rows].mean(axis=0),
            color="black",
            linewidth=2.5,
            label="held-out data (mean curve)",
        )
        axis.plot(
            grid,
            fold_context.generators["mean_preset"][term],
            color="0.5",
            linestyle="--",
            label="mean training preset",
        )
        for model in models:
            presets = examples[model]["presets"].set_index("term")
            if term in presets.index:
                curve = clamped_response_db(presets.loc[[term], PARAMS].to_numpy(), **response)[0]
                axis.plot(grid, curve, linewidth=1.8, label=_label(model, labels))
        axis.set_xscale("log")
        axis.set_title(f"'{term}'")
        axis.set_xlabel("frequency (Hz)")
        axis.grid(True, which="both", alpha=0.25)
        axis.axhline(0, color="0.6", linewidth=0.6)
    axes[0].set_ylabel("magnitude (dB)")
    axes[0].legend(fontsize=7)
    return figure


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _figure(figure: Figure, alt: str) -> dict[str, str]:
    """One embedded figure: its alt text and its PNG as a ``data:`` URI.

    The alt text becomes the figure's caption in ``docs/results.md`` (publish_results
    reads ``![alt](data:image/png;base64,...)``), so square brackets, which would end it
    early, are replaced by parentheses.
    """
    return {
        "alt": alt.replace("[", "(").replace("]", ")"),
        "src": _data_uri(_png(figure)),
    }


_NEWLINES = re.compile(r"\r\n|\r|\n")


def _table_cell(value: object) -> str:
    r"""A table cell's text as Markdown: ``\`` and ``|`` escaped, line breaks as spaces.

    An unescaped ``|`` would split the cell in two and shift every cell after it; a
    line break would end the row. The backslash is escaped first so that a cell's own
    backslash cannot escape the ``|`` after it.
    """
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return _NEWLINES.sub(" ", text)


def markdown_table(table: pd.DataFrame) -> str:
    """A table as a GitHub-flavoured Markdown table (the template's ``table`` filter).

    Every cell, headers included, goes through :func:`_table_cell`; the index is not
    shown (the report's tables carry their row names in a column).
    """
    cells = table.astype(str)
    lines = [
        "| " + " | ".join(_table_cell(column) for column in cells.columns) + " |",
        "|" + "---|" * len(cells.columns),
    ]
    lines += ["| " + " | ".join(_table_cell(v) for v in row) + " |" for row in cells.to_numpy()]
    return "\n".join(lines)


#: The metrics shown fold by fold (table and figure).
PER_FOLD_METRICS = ("silhouette", "probe_auc", "generation_rms_db", "energy_distance_db")


def report_context(
    summary_table: pd.DataFrame,
    verdicts: pd.DataFrame,
    fold_metrics: pd.DataFrame,
    baseline_fold_metrics: pd.DataFrame,
    strongest: Mapping[str, str],
    reproduction: pd.DataFrame,
    fold_table: pd.DataFrame,
    settings: pd.DataFrame,
    fold_contexts: Mapping[str, Any],
    examples: Mapping[str, Any],
    seed_runs: pd.DataFrame,
    provenance: Mapping[str, Any],
    configurations: Mapping[str, Mapping[str, Any]],
    compare: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything the report template shows, computed here: tables, sentences, figures.

    Args:
        summary_table: Mean and t-interval over folds per configuration or baseline and
            metric (``summarise_comparison``).
        verdicts: Paired, Holm-corrected verdicts (``judge_comparison``).
        fold_metrics: The models' metrics per fold and seed.
        baseline_fold_metrics: The baselines' metrics per fold.
        strongest: Per judged metric, the strongest baseline (chosen on the validation
            parts, ``strongest_baselines``).
        reproduction: The designs' in-sample metrics on the original protocol, per seed.
        fold_table: The folds (contributor → fold, part).
        settings: The descriptor settings (for the folds' row and term counts).
        fold_contexts: Per fold, the data and fitted baselines (the generated-EQ figure).
        examples: Per configuration, its example member's ``fold``, ``seed``,
            ``presets``, ``history``, and its ``wall_s``, ``train_s``, ``members``.
        seed_runs: The nested MLflow runs (``run_name``, ``run_id``, ``parent_run_id``,
            ``git_commit``).
        provenance: The SAFE-DB file's ``sha256`` and ``matches_published``.
        configurations: The resolved configurations (``design``, ``label``, …).
        compare: The comparison parameters (seeds, folds, statistics, ``claimed``).
        evaluation: The evaluation parameters (``morph``, ``response``).

    Returns:
        A plain dict: tables as DataFrames (the template's ``table`` filter renders
        them), sentences as strings, figures as ``{"alt", "src"}``.
    """
    summary = Summary(summary_table)
    labels = {name: spec["label"] for name, spec in configurations.items()}
    models = list(configurations)
    designs = [n for n, spec in configurations.items() if n == spec["design"]]
    reference = compare.get("reference_design")
    reference = reference if reference in designs else None
    baselines = list(dict.fromkeys(baseline_fold_metrics["configuration"]))
    strongest = dict(strongest)
    folds = fold_summary(fold_table, settings)
    per_fold = fold_means(
        pd.concat([fold_metrics, baseline_fold_metrics], ignore_index=True),
        list(PROTOCOL_METRICS),
    )
    shown = designs + sorted({strongest[m] for m in PER_FOLD_METRICS if m in strongest})
    generation_shown = [*designs, "mean_preset", OPTIMUM]
    floor = per_fold[per_fold["configuration"] == "held_out_half"][["fold", "generation_floor_db"]]
    generation_per_fold = per_fold_table(
        per_fold, "generation_rms_db", generation_shown, folds, labels
    )
    generation_per_fold["split-half floor"] = [
        _number(v)
        for v in floor.set_index("fold")["generation_floor_db"].reindex(generation_per_fold["fold"])
    ]
    seeds = compare_seeds(compare)
    example_fold = examples[designs[0]]["fold"]
    means = {
        metric: ", ".join(
            f"{_label(n, labels)} {_number(summary.mean(n, metric))}"
            for n in shown
            if summary.has(n, metric)
        )
        for metric in PER_FOLD_METRICS
    }
    return {
        "seeds": list(seeds),
        "n_folds": len(folds),
        "n_rows": len(settings),
        "n_terms": int(settings["term"].nunique()),
        "n_contributors": int(settings["contributor_id"].nunique()),
        "folds_config": dict(compare["folds"]),
        "confidence": float(compare["statistics"]["confidence"]),
        "alpha": float(compare["statistics"]["alpha"]),
        "sha256": provenance["sha256"],
        "matches_published": bool(provenance["matches_published"]),
        "verdict_sentences": verdict_sentences(verdicts, designs, labels),
        "verdict_table": verdict_table(summary, verdicts, designs, strongest, labels),
        "fold_summary": folds,
        "metric_descriptions": pd.DataFrame(
            [
                {
                    "metric": m,
                    "family": spec.family or "not judged",
                    "better": spec.better,
                    "unit": spec.unit or "-",
                    "what": spec.definition,
                }
                for m, spec in PROTOCOL_METRICS.items()
            ]
        ),
        "preset_gap": _number(
            summary.mean("mean_preset", "generation_rms_db")
            - summary.mean(OPTIMUM, "generation_rms_db")
        ),
        "power_percent": round(100 * float(compare["statistics"]["power"])),
        "distribution_min_rows": int(evaluation["distribution"]["min_test_rows"]),
        "distribution_k": int(evaluation["distribution"]["k"]),
        "generation_table": generation_table(summary, verdicts, designs, labels),
        "generation_sentences": generation_sentences(summary, verdicts, designs, labels),
        "generation_per_fold": generation_per_fold,
        "distribution_table": distribution_table(
            summary, [*designs, *DISTRIBUTION_REFERENCES], DISTRIBUTION_METRICS, labels
        ),
        "morph_distribution_table": distribution_table(
            summary, [*designs, *DISTRIBUTION_REFERENCES], MORPH_DISTRIBUTION_METRICS, labels
        ),
        "strongest_table": pd.DataFrame(
            [{"metric": m, "strongest baseline": _label(b, labels)} for m, b in strongest.items()]
        ),
        "family_tables": family_tables(summary, models + baselines, labels),
        "per_fold_tables": {
            m: per_fold_table(per_fold, m, shown, folds, labels) for m in PER_FOLD_METRICS
        },
        "per_fold_figures": [
            _figure(
                per_fold_figure(per_fold, PER_FOLD_METRICS, shown, list(folds["fold"]), labels),
                "Per-fold values of "
                + "; ".join(f"{m} (means: {means[m]})" for m in PER_FOLD_METRICS)
                + ". Each point is one held-out fold; the models' points are means over seeds.",
            )
        ],
        "construction_table": construction_table(summary, configurations, labels),
        "ablation_table": ablation_table(verdicts, summary, configurations, labels),
        "reference": reference,
        "reference_label": _label(reference, labels) if reference else "",
        "reference_table": (
            reference_table(verdicts, summary, designs, reference, labels)
            if reference is not None and len(designs) > 1
            else None
        ),
        "best_design_table": best_design_table(
            verdicts, summary, designs, strongest, reference, labels
        ),
        "question_answers": question_answers(
            verdicts, summary, designs, compare.get("questions") or [], labels
        ),
        "reproduction_table": reproduction_table(reproduction, compare["claimed"], labels),
        "all_verdicts_table": all_verdicts_table(verdicts, labels),
        "example_fold": example_fold,
        "generated_figures": [
            _figure(
                generated_terms_figure(
                    examples, designs, fold_contexts[example_fold], labels, evaluation
                ),
                f"Generated {' and '.join(fold_contexts[example_fold].pair)} EQ curves of "
                f"{', '.join(_label(d, labels) for d in designs)} (fold {example_fold}, seed "
                f"{examples[designs[0]]['seed']}) against the held-out contributors' mean "
                "curve and the mean training preset.",
            )
        ],
        "training_figures": [
            _figure(
                plot_training_curves(examples[d]["history"], labels[d]),
                f"{labels[d]} training curves (fold {examples[d]['fold']}, seed "
                f"{examples[d]['seed']}): total loss with its two weighted parts "
                "(reconstruction and contrastive weight × contrastive loss), each loss for "
                "training and validation, and the schedules. A rising total under an "
                "annealed contrastive weight is the weight, not divergence.",
            )
            for d in designs
        ],
        "git_commit": seed_runs["git_commit"].iloc[0] if len(seed_runs) else "unknown",
        "parent_run": seed_runs["parent_run_id"].iloc[0] if len(seed_runs) else "n/a",
        "n_runs": len(seed_runs),
        "wall_s": float(sum(examples[c]["wall_s"] for c in configurations)),
        "members": int(sum(examples[c]["members"] for c in configurations)),
        "configurations": [
            {
                "name": name,
                "label": spec["label"],
                "design": spec["design"],
                "feature_normaliser": dict(spec["feature_normaliser"]),
                "changes": dict(spec["changes"] or {}),
            }
            for name, spec in configurations.items()
        ],
    }


#: The templates: Markdown without autoescaping (markdown-it escapes when it renders the
#: HTML), the HTML page with it.
_TEMPLATES = Environment(
    loader=PackageLoader("neural_eq_morphing.pipelines.compare", "templates"),
    undefined=StrictUndefined,
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_TEMPLATES.filters["table"] = markdown_table

#: CommonMark plus GitHub's tables; ``html=False``: raw HTML in the Markdown (a ``<`` in
#: a label or cell) is shown as text, never interpreted.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def render_markdown(context: Mapping[str, Any]) -> str:
    """The report in Markdown, figures embedded as ``![alt](data:image/png;base64,...)``.

    Raises:
        jinja2.UndefinedError: If the template names a value the context lacks.
    """
    return _TEMPLATES.get_template("compare_report.md.j2").render(context)


def render_html(markdown: str) -> str:
    """The Markdown report as one self-contained HTML page (figures stay ``data:`` URIs)."""
    return _TEMPLATES.get_template("compare_report.html.j2").render(body=_MARKDOWN.render(markdown))


def render_report(context: Mapping[str, Any]) -> tuple[str, str]:
    """The comparison report as Markdown and as self-contained HTML.

    Args:
        context: Output of :func:`report_context`.

    Returns:
        The Markdown text and the HTML page rendered from it.
    """
    markdown = render_markdown(context)
    return markdown, render_html(markdown)
