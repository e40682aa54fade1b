"""The comparison report: blocks built from measured numbers, rendered to Markdown and HTML.

Every number in the report comes from the comparison's metrics (which are also logged to
MLflow); every sentence in "Findings" is filled from those numbers.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.eq.response import clamped_response_db, frequency_grid
from neural_eq_morphing.pipelines.evaluation.plots import (
    plot_latent_map,
    plot_morph,
    plot_training_curves,
)

PARAMS = list(PARAMETER_NAMES)


@dataclass(frozen=True)
class Block:
    """One piece of the report: ``kind`` is heading, text, table or figure."""

    kind: str
    content: Any
    caption: str = ""


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
    """Whether removing a change hurts, helps or is within seed noise (±2 standard errors)."""
    table = seed_metrics.pivot_table(index="seed", columns="configuration", values=metric)
    gains = better * (table["log2"] - table[ablation]).dropna().to_numpy()
    mean = float(np.mean(gains))
    if len(gains) < 2:
        return f"{mean:+.{digits}f} (one seed: no verdict)"
    error = float(np.std(gains, ddof=1) / np.sqrt(len(gains)))
    if mean > 2 * error:
        verdict = "the change helps"
    elif mean < -2 * error:
        verdict = "the change hurts"
    else:
        verdict = "within seed noise"
    return f"{mean:+.{digits}f} ± {error:.{digits}f} ({verdict})"


def findings(
    summary: Summary, seed_metrics: pd.DataFrame, configurations: Sequence[str]
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
    ablations = [c for c in configurations if c.startswith("log2_")]
    for name, (metric, better, digits) in JUDGED.items():
        if not ablations:
            break
        verdicts = [
            f"{ablation}: {_paired_verdict(seed_metrics, ablation, metric, better, digits)}"
            for ablation in ablations
        ]
        sentences.append(
            f"On {name} (Log 2: {summary.mean('log2', metric):.{digits}f}), the effect of each "
            "of Log 2's changes, paired by seed (positive: Log 2 does better than the variant "
            "without that change; ± one standard error): " + "; ".join(verdicts) + "."
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


def build_blocks(
    summary_table: pd.DataFrame,
    seed_metrics: pd.DataFrame,
    examples: Mapping[str, Any],
    seed_runs: pd.DataFrame,
    provenance: Mapping[str, Any],
    compare: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    seeds: Sequence[int],
) -> list[Block]:
    """Assemble the report's blocks."""
    summary = Summary(summary_table)
    configurations = list(compare["configurations"])
    labels = {c: compare["configurations"][c]["label"] for c in configurations}
    morph_from, morph_to = evaluation["morph"]
    blocks = [
        Block("heading", "Log 1 vs Log 2: neural semantic EQ on SAFE-DB"),
        Block(
            "text",
            f"Every figure is a mean ± standard deviation over {len(seeds)} seeds "
            f"({', '.join(map(str, seeds))}), measured by this run on the SAFE-DB file "
            f"(SHA-256 {provenance['sha256'][:12]}…). In-sample: every filtered row; held-out: "
            "test-split rows of terms with enough test rows. The claimed columns "
            "are the original write-up's figures, for reference.",
        ),
        Block("heading2", "Headline (in-sample, as the original comparison)"),
        Block("table", headline_table(summary, seed_metrics, compare["claimed"])),
        Block("heading2", "Held-out protocol and the no-model baseline"),
        Block("table", held_out_table(summary, ["log1", "log2"])),
        Block("text", protocol_note(summary)),
        Block("heading2", "Ablation: Log 2's changes one at a time"),
        Block(
            "text",
            "Isolated: log vs linear frequency scaling, the annealed vs fixed contrastive "
            "weight, the LR schedule, and (for Log 1) the units of its loss. Not isolated: "
            "batch size (32 vs 64), epochs (100 vs 150), the decoder head, and z-score vs "
            "min-max features. Note that Log 2's plateau schedule watches the total "
            "validation loss, which rises with the annealed contrastive weight, so it acts "
            "as a step decay (halving every patience + 1 epochs).",
        ),
        Block("table", ablation_table(summary, labels)),
        Block("heading2", "Findings"),
        Block("list", findings(summary, seed_metrics, configurations)),
        Block("heading2", f"Generated EQ for {morph_from} and {morph_to} (first seed)"),
    ]
    columns = {}
    for configuration in ("log1", "log2"):
        presets = examples[configuration]["presets"].set_index("term")
        for term in (morph_from, morph_to):
            if term in presets.index:
                columns[f"{configuration}: {term}"] = [
                    *(f"{presets.loc[term, p]:.2f}" for p in PARAMS),
                    "yes" if presets.loc[term, "valid"] else "NO",
                ]
    presets_table = pd.DataFrame(columns, index=[*PARAMS, "inside the plug-in limits"])
    blocks.append(Block("table", presets_table.rename_axis("parameter").reset_index()))
    blocks.append(
        Block("figure", _png(generated_terms_figure(examples, [morph_from, morph_to], evaluation)))
    )
    blocks.append(Block("heading2", f"{morph_from} → {morph_to} morph"))
    blocks.append(
        Block(
            "figures",
            [
                _png(plot_morph(examples[c]["morph"], labels[c], evaluation))
                for c in ("log1", "log2")
            ],
        )
    )
    blocks.append(Block("heading2", "Latent spaces"))
    blocks.append(
        Block(
            "figures",
            [_png(plot_latent_map(examples[c]["latent"], labels[c])) for c in ("log1", "log2")],
        )
    )
    blocks.append(Block("heading2", "Training curves"))
    blocks.append(
        Block(
            "figures",
            [
                _png(plot_training_curves(examples[c]["history"], labels[c]))
                for c in ("log1", "log2")
            ],
        )
    )
    wall = sum(examples[c]["wall_s"] for c in configurations)
    parent = seed_runs["parent_run_id"].iloc[0] if len(seed_runs) else "n/a"
    git_commit = seed_runs["git_commit"].iloc[0] if len(seed_runs) else "unknown"
    blocks += [
        Block("heading2", "Provenance"),
        Block(
            "list",
            [
                f"SAFE-DB SHA-256 {provenance['sha256']} ("
                + ("the published file" if provenance["matches_published"] else "NOT published")
                + ")",
                f"git commit: {git_commit}",
                f"seeds: {', '.join(map(str, seeds))}",
                f"MLflow parent run {parent}; per-seed runs: "
                + ", ".join(f"{r.run_name} = {r.run_id}" for r in seed_runs.itertuples()),
                f"training and evaluation wall time: {wall:.1f} s (MLflow metrics "
                "compare.timing.<configuration>.wall_s)",
                "configurations: "
                + "; ".join(
                    f"{c}: normaliser {compare['configurations'][c]['normaliser']}, "
                    f"training changes {compare['configurations'][c]['training'] or 'none'}"
                    for c in configurations
                ),
            ],
        ),
    ]
    return blocks


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def to_markdown(blocks: Sequence[Block]) -> str:
    """Render blocks as Markdown (figures embedded as data URIs)."""
    lines = []
    for block in blocks:
        if block.kind == "heading":
            lines += [f"# {block.content}", ""]
        elif block.kind == "heading2":
            lines += [f"## {block.content}", ""]
        elif block.kind == "text":
            lines += [block.content, ""]
        elif block.kind == "list":
            lines += [f"- {item}" for item in block.content] + [""]
        elif block.kind == "table":
            table = block.content.astype(str)
            lines.append("| " + " | ".join(table.columns) + " |")
            lines.append("|" + "---|" * len(table.columns))
            lines += ["| " + " | ".join(row) + " |" for row in table.to_numpy()]
            lines.append("")
        elif block.kind in ("figure", "figures"):
            images = block.content if block.kind == "figures" else [block.content]
            lines += [f"![figure]({_data_uri(png)})" for png in images] + [""]
    return "\n".join(lines)


def to_html(blocks: Sequence[Block]) -> str:
    """Render blocks as one self-contained HTML page."""
    body = []
    for block in blocks:
        if block.kind == "heading":
            body.append(f"<h1>{html.escape(block.content)}</h1>")
        elif block.kind == "heading2":
            body.append(f"<h2>{html.escape(block.content)}</h2>")
        elif block.kind == "text":
            body.append(f"<p>{html.escape(block.content)}</p>")
        elif block.kind == "list":
            items = "".join(f"<li>{html.escape(item)}</li>" for item in block.content)
            body.append(f"<ul>{items}</ul>")
        elif block.kind == "table":
            body.append(block.content.to_html(index=False, escape=True, border=0))
        elif block.kind in ("figure", "figures"):
            images = block.content if block.kind == "figures" else [block.content]
            tags = "".join(f'<img src="{_data_uri(png)}" alt="figure">' for png in images)
            body.append(f'<div class="figures">{tags}</div>')
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f3f3f3}.figures{display:flex;flex-wrap:wrap;gap:8px}"
        ".figures img{max-width:49%;height:auto}.figures img:only-child{max-width:100%}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Log 1 vs Log 2</title><style>{style}</style></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )
