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
from neural_eq_morphing.pipelines.designs import compare_seeds
from neural_eq_morphing.pipelines.evaluation.plots import (
    plot_latent_map,
    plot_morph,
    plot_training_curves,
)

PARAMS = list(PARAMETER_NAMES)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _cell(mean: float, std: float, digits: int) -> str:
    if mean is None or not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


class Summary:
    """Look-ups in the long summary table (configuration, metric, mean, std, n)."""

    def __init__(self, summary: pd.DataFrame) -> None:
        self._table = summary.set_index(["configuration", "metric"])

    def mean(self, configuration: str, metric: str) -> float:
        """Mean over seeds."""
        return float(self._table.loc[(configuration, metric), "mean"])

    def cell(self, configuration: str, metric: str, digits: int = 3) -> str:
        """``mean ± std`` as text."""
        row = self._table.loc[(configuration, metric)]
        return _cell(float(row["mean"]), float(row["std"]), digits)


def _hz(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} MHz"
    if value >= 1e3:
        return f"{value / 1e3:.1f} kHz"
    return f"{value:.0f} Hz"


def headline_table(
    summary: Summary, seed_metrics: pd.DataFrame, claimed: Mapping[str, Mapping[str, float]]
) -> pd.DataFrame:
    """The original comparison's table (in-sample), measured beside claimed."""
    rows = []
    for configuration in ("log1", "log2"):
        metrics = seed_metrics[seed_metrics["configuration"] == configuration]
        claim = claimed.get(configuration, {})
        rows.append(
            {
                "design": configuration,
                "generated frequencies (min – max over seeds)": (
                    f"{_hz(metrics['min_frequency_hz'].min())} – "
                    f"{_hz(metrics['max_frequency_hz'].max())}"
                ),
                "claimed max frequency": _hz(claim["max_frequency_hz"])
                if "max_frequency_hz" in claim
                else "within limits",
                "valid settings (random latents)": summary.cell(
                    configuration, "valid_share.random_latents"
                ),
                "claimed valid": f"{claim['valid_share']:.0%}"
                if "valid_share" in claim
                else "not all",
                "silhouette": summary.cell(configuration, "silhouette.in_sample.latent"),
                "claimed silhouette": f"{claim.get('silhouette', float('nan')):.2f}",
                "Davies–Bouldin": summary.cell(configuration, "davies_bouldin.in_sample.latent", 2),
                "claimed Davies–Bouldin": f"{claim.get('davies_bouldin', float('nan')):.2f}",
                "reconstruction loss (test split, each design's own normalised space)": (
                    summary.cell(configuration, "reconstruction_mse", 4)
                ),
            }
        )
    return pd.DataFrame(rows)


def held_out_table(summary: Summary, configurations: Sequence[str]) -> pd.DataFrame:
    """Clustering per configuration, with the no-model baseline on the same rows.

    The baseline is deterministic (no seed enters it), so it is shown without a spread.
    """
    rows = []
    for configuration in configurations:
        for space in ("latent", "baseline"):
            name = (
                f"{configuration}: latent"
                if space == "latent"
                else f"{configuration}: no model (its normalised 13 parameters)"
            )
            row = {"": name}
            for protocol in ("held_out", "in_sample"):
                for metric, label, digits in (
                    ("silhouette", "silhouette", 3),
                    ("davies_bouldin", "Davies–Bouldin", 2),
                ):
                    key = f"{metric}.{protocol}.{space}"
                    header = f"{label} ({protocol.replace('_', '-')})"
                    row[header] = (
                        summary.cell(configuration, key, digits)
                        if space == "latent"
                        else f"{summary.mean(configuration, key):.{digits}f}"
                    )
            rows.append(row)
    return pd.DataFrame(rows)


def protocol_note(summary: Summary) -> str:
    """How many rows and terms each protocol scores (they are not like for like)."""
    return (
        f"Held-out scores {summary.mean('log2', 'rows.held_out'):.0f} test rows of "
        f"{summary.mean('log2', 'terms.held_out'):.0f} terms (those with enough test rows); "
        f"in-sample scores {summary.mean('log2', 'rows.in_sample'):.0f} rows of "
        f"{summary.mean('log2', 'terms.in_sample'):.0f} terms, so the two protocols are not "
        "directly comparable: fewer, larger classes separate more easily."
    )


ABLATION_METRICS = {
    "valid (random latents)": ("valid_share.random_latents", 3),
    "silhouette held-out": ("silhouette.held_out.latent", 3),
    "Davies–Bouldin in-sample": ("davies_bouldin.in_sample.latent", 2),
    "dB error (mean)": ("reconstruction_rms_db.mean", 2),
    "generation dB": ("generation_rms_db", 2),
}


def ablation_table(summary: Summary, labels: Mapping[str, str]) -> pd.DataFrame:
    """Every configuration against the metrics the ablation is judged on."""
    return pd.DataFrame(
        [
            {
                "configuration": configuration,
                "what it is": label,
                **{
                    header: summary.cell(configuration, metric, digits)
                    for header, (metric, digits) in ABLATION_METRICS.items()
                },
            }
            for configuration, label in labels.items()
        ]
    )


#: Metrics the ablation is judged on: (column, +1 if higher is better else -1, digits).
JUDGED = {
    "held-out silhouette": ("silhouette.held_out.latent", +1, 3),
    "in-sample Davies–Bouldin": ("davies_bouldin.in_sample.latent", -1, 2),
    "dB reconstruction error": ("reconstruction_rms_db.mean", -1, 2),
}


def _paired_verdict(
    seed_metrics: pd.DataFrame, ablation: str, metric: str, better: int, digits: int
) -> str:
    """Whether Log 2 does better or worse than a configuration, or within seed noise (±2 SE)."""
    table = seed_metrics.pivot_table(index="seed", columns="configuration", values=metric)
    gains = better * (table["log2"] - table[ablation]).dropna().to_numpy()
    mean = float(np.mean(gains))
    if len(gains) < 2:
        return f"{mean:+.{digits}f} (one seed: no verdict)"
    error = float(np.std(gains, ddof=1) / np.sqrt(len(gains)))
    if mean > 2 * error:
        verdict = "Log 2 better"
    elif mean < -2 * error:
        verdict = "Log 2 worse"
    else:
        verdict = "within seed noise"
    return f"{mean:+.{digits}f} ± {error:.{digits}f} ({verdict})"


def against_log2(configurations: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The configurations judged against Log 2: its ablations and every other design.

    Log 1, Log 2 and the ablations of Log 1 are left out (they have sentences of their own).
    """
    return [
        name
        for name, spec in configurations.items()
        if name not in ("log1", "log2") and spec["design"] != "log1"
    ]


def findings(
    summary: Summary, seed_metrics: pd.DataFrame, configurations: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Sentences filled from the measured numbers."""
    sentences = []
    for configuration in ("log1", "log2"):
        latent = summary.mean(configuration, "silhouette.held_out.latent")
        baseline = summary.mean(configuration, "silhouette.held_out.baseline")
        latent_db = summary.mean(configuration, "davies_bouldin.held_out.latent")
        baseline_db = summary.mean(configuration, "davies_bouldin.held_out.baseline")
        beats = latent > baseline and latent_db < baseline_db
        sentences.append(
            f"{configuration} {'beats' if beats else 'does not beat'} the no-model baseline "
            f"(its normalised parameters) on held-out data: silhouette {latent:.3f} against "
            f"{baseline:.3f}, "
            f"Davies–Bouldin {latent_db:.2f} against {baseline_db:.2f}."
        )
    log1 = seed_metrics[seed_metrics["configuration"] == "log1"]
    valid = summary.mean("log1", "valid_share.random_latents")
    valid_frequencies = summary.mean("log1", "valid_frequency_share.random_latents")
    sentences.append(
        f"Log 1's generated settings are valid in {valid:.0%} of random latent points; its "
        f"frequencies reach {_hz(log1['max_frequency_hz'].max())} (valid frequencies: "
        f"{valid_frequencies:.0%}): by design its decoder outputs Hz, which generation "
        "reads as z-scores."
    )
    ablations = against_log2(configurations)
    for name, (metric, better, digits) in JUDGED.items():
        if not ablations:
            break
        verdicts = [
            f"{ablation}: {_paired_verdict(seed_metrics, ablation, metric, better, digits)}"
            for ablation in ablations
        ]
        sentences.append(
            f"On {name} (Log 2: {summary.mean('log2', metric):.{digits}f}), each of Log 2's "
            "ablations and each other design against Log 2, paired by seed (positive: Log 2 "
            "does better than the configuration; ± one standard error): "
            + "; ".join(verdicts)
            + "."
        )
    if "log1_consistent_units" in configurations:
        fixed = summary.mean("log1_consistent_units", "valid_share.random_latents")
        sentences.append(
            f"Fixing only Log 1's units mismatch takes its valid share from "
            f"{summary.mean('log1', 'valid_share.random_latents'):.0%} to {fixed:.0%} and its "
            "dB reconstruction error from "
            f"{summary.mean('log1', 'reconstruction_rms_db.mean'):.2f} to "
            f"{summary.mean('log1_consistent_units', 'reconstruction_rms_db.mean'):.2f} dB."
        )
    return sentences


def generated_terms_figure(
    examples: Mapping[str, Any], terms: Sequence[str], evaluation: Mapping[str, Any]
) -> Figure:
    """The generated EQ of a few terms from Log 1 and Log 2 (first seed), as curves."""
    response = evaluation["response"]
    grid = frequency_grid(int(response["n_points"]), response["f_min"], response["f_max"])
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots(1, len(terms), sharey=True, squeeze=False).ravel()
    for axis, term in zip(axes, terms, strict=True):
        for configuration, colour in (("log1", "tab:orange"), ("log2", "tab:blue")):
            presets = examples[configuration]["presets"].set_index("term")
            if term in presets.index:
                curve = clamped_response_db(presets.loc[[term], PARAMS].to_numpy(), **response)[0]
                axis.plot(grid, curve, color=colour, linewidth=2, label=configuration)
        axis.set_xscale("log")
        axis.set_title(f"generated '{term}'")
        axis.set_xlabel("frequency (Hz)")
        axis.grid(True, which="both", alpha=0.25)
        axis.axhline(0, color="0.6", linewidth=0.6)
    axes[0].set_ylabel("magnitude (dB, clamped to the plug-in limits)")
    axes[0].legend()
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


def _presets_table(examples: Mapping[str, Any], terms: Sequence[str]) -> pd.DataFrame:
    """The generated settings of the morph's terms (first seed), Log 1 and Log 2 side by side."""
    columns = {}
    for configuration in ("log1", "log2"):
        presets = examples[configuration]["presets"].set_index("term")
        for term in terms:
            if term in presets.index:
                columns[f"{configuration}: {term}"] = [
                    *(f"{presets.loc[term, p]:.2f}" for p in PARAMS),
                    "yes" if presets.loc[term, "valid"] else "NO",
                ]
    table = pd.DataFrame(columns, index=[*PARAMS, "inside the plug-in limits"])
    return table.rename_axis("parameter").reset_index()


def report_context(
    summary_table: pd.DataFrame,
    seed_metrics: pd.DataFrame,
    examples: Mapping[str, Any],
    seed_runs: pd.DataFrame,
    provenance: Mapping[str, Any],
    configurations: Mapping[str, Mapping[str, Any]],
    compare: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything the report template shows, computed here: tables, sentences, figures.

    Args:
        summary_table: Long summary (``configuration``, ``metric``, ``mean``, ``std``,
            ``n``).
        seed_metrics: One row of metrics per configuration and seed.
        examples: Per configuration, the first seed's ``presets``, ``morph``, ``latent``
            and ``history``, and its ``wall_s`` and ``train_s``.
        seed_runs: The nested MLflow runs (``run_name``, ``run_id``, ``parent_run_id``,
            ``git_commit``).
        provenance: The SAFE-DB file's ``sha256`` and ``matches_published``.
        configurations: Each configuration's name to its resolved configuration
            (``design``, ``label``, ``feature_normaliser``, ``changes``); the report names
            Log 1 and Log 2 by their configurations ``log1`` and ``log2``.
        compare: The comparison parameters (seeds and ``claimed``).
        evaluation: The evaluation parameters (``morph``, ``response``).

    Returns:
        A plain dict: tables as DataFrames (the template renders them with its ``table``
        filter), sentences as strings, figures as ``{"alt", "src"}`` with ``src`` a PNG
        ``data:`` URI, and the provenance values.
    """
    summary = Summary(summary_table)
    seeds = compare_seeds(compare)
    specs = configurations
    configurations = list(specs)
    labels = {name: specs[name]["label"] for name in configurations}
    morph_from, morph_to = evaluation["morph"]
    compared = ("log1", "log2")
    return {
        "seeds": list(seeds),
        "sha256": provenance["sha256"],
        "matches_published": bool(provenance["matches_published"]),
        "headline_table": headline_table(summary, seed_metrics, compare["claimed"]),
        "held_out_table": held_out_table(summary, list(compared)),
        "protocol_note": protocol_note(summary),
        "ablation_table": ablation_table(summary, labels),
        "findings": findings(summary, seed_metrics, specs),
        "morph_from": morph_from,
        "morph_to": morph_to,
        "presets_table": _presets_table(examples, [morph_from, morph_to]),
        "generated_figures": [
            _figure(
                generated_terms_figure(examples, [morph_from, morph_to], evaluation),
                f"generated EQ for {morph_from} and {morph_to}: log1 and log2 (first seed)",
            )
        ],
        "morph_figures": [
            _figure(
                plot_morph(examples[c]["morph"], labels[c], evaluation),
                f"{labels[c]}: {morph_from} → {morph_to} morph",
            )
            for c in compared
        ],
        "latent_figures": [
            _figure(plot_latent_map(examples[c]["latent"], labels[c]), f"{labels[c]}: latent space")
            for c in compared
        ],
        "training_figures": [
            _figure(
                plot_training_curves(examples[c]["history"], labels[c]),
                f"{labels[c]}: training curves",
            )
            for c in compared
        ],
        "git_commit": seed_runs["git_commit"].iloc[0] if len(seed_runs) else "unknown",
        "parent_run": seed_runs["parent_run_id"].iloc[0] if len(seed_runs) else "n/a",
        "seed_runs": [(run.run_name, run.run_id) for run in seed_runs.itertuples()],
        "wall_s": float(sum(examples[c]["wall_s"] for c in configurations)),
        "configurations": [
            {
                "name": name,
                "design": specs[name]["design"],
                "feature_normaliser": dict(specs[name]["feature_normaliser"]),
                "changes": dict(specs[name]["changes"] or {}),
            }
            for name in configurations
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
