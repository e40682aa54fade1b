"""The compare report: Jinja2 template for the words, markdown-it-py for the HTML."""

from __future__ import annotations

import base64
import html
import re

import jinja2
import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETER_NAMES, UPPER_LIMITS
from neural_eq_morphing.pipelines.compare.nodes import summarise_comparison
from neural_eq_morphing.pipelines.compare.report import (
    markdown_table,
    render_html,
    render_markdown,
    render_report,
    report_context,
)
from neural_eq_morphing.pipelines.publish_results.nodes import publish_results

PARAMS = list(PARAMETER_NAMES)
SEEDS = [1, 2]
EVALUATION = {
    "morph": ["warm", "bright"],
    "response": {"n_points": 32, "f_min": 20.0, "f_max": 20000.0},
}
#: Resolved configurations: design, label, feature normaliser and what each changes.
CONFIGURATIONS = {
    "log1": {
        "design": "log1",
        "label": "Log 1 <original>",
        "feature_normaliser": {"kind": "zscore"},
        "changes": {},
    },
    "log2": {
        "design": "log2",
        "label": "Log 2 (fix)",
        "feature_normaliser": {"kind": "minmax", "log_kinds": ["freq", "q"]},
        "changes": {},
    },
    "log2_no_lr_schedule": {
        "design": "log2",
        "label": "Log 2 | no LR schedule",  # a pipe in a table cell
        "feature_normaliser": {"kind": "minmax", "log_kinds": ["freq", "q"]},
        "changes": {"training": {"lr_schedule": False}},
    },
}
COMPARE = {
    "n_seeds": len(SEEDS),
    "first_seed": SEEDS[0],
    "claimed": {
        "log1": {"silhouette": -0.5, "davies_bouldin": 23.06, "max_frequency_hz": 1.6e6},
        "log2": {"silhouette": 0.07, "davies_bouldin": 4.69, "valid_share": 1.0},
    },
}


def _seed_metrics() -> pd.DataFrame:
    rows = []
    for configuration, base in (("log1", 0.1), ("log2", 0.5), ("log2_no_lr_schedule", 0.3)):
        for seed, noise in zip(SEEDS, (-0.01, 0.01), strict=True):
            row = {"configuration": configuration, "seed": seed}
            for protocol in ("held_out", "in_sample"):
                row[f"silhouette.{protocol}.latent"] = base + noise
                row[f"silhouette.{protocol}.baseline"] = 0.35
                row[f"davies_bouldin.{protocol}.latent"] = 2.0 - base + noise
                row[f"davies_bouldin.{protocol}.baseline"] = 1.6
                row[f"rows.{protocol}"] = 100
                row[f"terms.{protocol}"] = 3
            row |= {
                "valid_share.random_latents": 0.0 if configuration == "log1" else 1.0,
                "valid_frequency_share.random_latents": 0.0 if configuration == "log1" else 1.0,
                "max_frequency_hz": 1.6e6 if configuration == "log1" else 1e4,
                "min_frequency_hz": 3e3 if configuration == "log1" else 25.0,
                "reconstruction_mse": 0.003 + noise / 100,
                "reconstruction_rms_db.mean": 3.0 - base + noise,
                "generation_rms_db": 2.0 - base,
            }
            rows.append(row)
    return pd.DataFrame(rows)


def _examples() -> dict:
    rng = np.random.default_rng(0)
    examples = {}
    for configuration in CONFIGURATIONS:
        presets = pd.DataFrame(
            rng.uniform(LOWER_LIMITS, UPPER_LIMITS, (3, len(PARAMS))), columns=PARAMS
        )
        presets.insert(0, "term", ["warm", "bright", "airy"])
        presets["valid"] = [True, configuration != "log1", True]
        morph = pd.DataFrame(
            rng.uniform(LOWER_LIMITS, UPPER_LIMITS, (3, len(PARAMS))), columns=PARAMS
        ).assign(from_term="warm", to_term="bright", alpha=[0.0, 0.5, 1.0])
        latent = pd.DataFrame(rng.normal(size=(12, 4)), columns=[f"latent_{k}" for k in range(4)])
        latent = latent.assign(term=["warm", "bright", "airy"] * 4, split=["train", "test"] * 6)
        losses = ("train_loss", "val_loss", "train_reconstruction", "val_reconstruction")
        history = pd.DataFrame(
            {
                "epoch": [1, 2, 3],
                **{c: [3.0, 2.0, 1.0] for c in (*losses, "train_contrastive", "val_contrastive")},
                "contrastive_weight": [0.1, 0.3, 0.5],
                "learning_rate": [1e-3, 1e-3, 5e-4],
            }
        )
        examples[configuration] = {
            "presets": presets,
            "morph": morph,
            "latent": latent,
            "history": history,
            "wall_s": 1.5,
            "train_s": 1.0,
        }
    return examples


def _inputs() -> tuple:
    seed_metrics = _seed_metrics()
    seed_runs = pd.DataFrame(
        [
            {
                "run_name": f"{configuration} seed {seed}",
                "run_id": f"run{index}",
                "parent_run_id": "parent0",
                "git_commit": "abc123",
            }
            for index, (configuration, seed) in enumerate(
                (c, s) for c in CONFIGURATIONS for s in SEEDS
            )
        ]
    )
    provenance = {"sha256": "f" * 64, "matches_published": False}
    return (
        summarise_comparison(seed_metrics),
        seed_metrics,
        _examples(),
        seed_runs,
        provenance,
        CONFIGURATIONS,
        COMPARE,
        EVALUATION,
    )


@pytest.fixture(scope="module")
def context() -> dict:
    return report_context(*_inputs())


@pytest.fixture(scope="module")
def report() -> tuple[str, str]:
    return render_report(report_context(*_inputs()))


def _cells(row: str) -> list[str]:
    return re.findall(r"<t[dh]>(.*?)</t[dh]>", row, flags=re.DOTALL)


def test_a_pipe_in_a_cell_is_escaped_and_stays_one_cell():
    table = pd.DataFrame({"name | kind": ["a|b", "back\\slash|", "two\nlines"], "n": [1, 2, 3]})
    markdown = markdown_table(table)
    assert markdown.splitlines() == [
        "| name \\| kind | n |",
        "|---|---|",
        "| a\\|b | 1 |",
        "| back\\\\slash\\| | 2 |",
        "| two lines | 3 |",
    ]
    page = render_html(markdown)
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.DOTALL)
    assert [_cells(row) for row in rows] == [
        ["name | kind", "n"],
        ["a|b", "1"],
        ["back\\slash|", "2"],
        ["two lines", "3"],
    ]


def test_the_html_holds_every_table_and_figure_of_the_markdown(context, report):
    markdown, page = report
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Log 1 vs Log 2</title>" in page
    tables = ("headline_table", "held_out_table", "ablation_table", "presets_table")
    assert page.count("<table>") == len(tables)
    for name in tables:
        headers = [column for column in context[name].columns if column]
        assert all(f"<th>{header}</th>" in page for header in headers), name
    figures = [
        figure
        for name in ("generated_figures", "morph_figures", "latent_figures", "training_figures")
        for figure in context[name]
    ]
    assert len(figures) == 7
    for figure in figures:
        assert figure["src"].startswith("data:image/png;base64,")
        assert f"![{figure['alt']}]({figure['src']})" in markdown
        alt = html.escape(figure["alt"], quote=False)
        assert f'<img src="{figure["src"]}" alt="{alt}" />' in page
    # Side-by-side pairs share one paragraph; the first figure stands alone.
    assert page.count("<p><img ") == 4


def test_the_label_with_a_pipe_is_one_cell_of_the_ablation_table(report):
    markdown, page = report
    assert "| log2_no_lr_schedule | Log 2 \\| no LR schedule |" in markdown
    ablation = page.split("Ablation")[1].split("<h2>")[0]
    (row,) = [row for row in ablation.split("<tr>") if "log2_no_lr_schedule" in row]
    cells = _cells(row)
    assert len(cells) == 7
    assert cells[1] == "Log 2 | no LR schedule"


def test_text_is_escaped_in_the_html(report):
    _, page = report
    assert "Log 1 &lt;original&gt;" in page
    assert "<original>" not in page
    assert "<code>compare.timing.&lt;configuration&gt;.wall_s</code>" in page


def test_the_report_says_what_it_measured(report):
    markdown, _ = report
    for heading in (
        "# Log 1 vs Log 2: neural semantic EQ on SAFE-DB",
        "## Headline (in-sample, as the original comparison)",
        "## Held-out protocol and the no-model baseline",
        "## Ablation: Log 2's changes one at a time",
        "## Findings",
        "## Generated EQ for warm and bright (first seed)",
        "## warm → bright morph",
        "## Latent spaces",
        "## Training curves",
        "## Provenance",
    ):
        assert f"\n{heading}\n" in f"\n{markdown}"
    assert "over 2 seeds (1, 2)" in markdown
    assert "- log2 beats the no-model baseline" in markdown
    assert "log2_no_lr_schedule: +0.200 ± 0.000 (Log 2 better)" in markdown
    assert f"- SAFE-DB SHA-256 {'f' * 64} (NOT published)\n" in markdown
    assert "- git commit: abc123\n" in markdown
    runs = "- MLflow parent run parent0; per-seed runs: log1 seed 1 = run0, log1 seed 2 = run1, "
    assert runs in markdown
    assert "training and evaluation wall time: 4.5 s" in markdown
    assert (
        "- configurations: log1: design log1, feature normaliser {'kind': 'zscore'}, "
        "changes none; log2: design log2, feature normaliser {'kind': 'minmax', "
        "'log_kinds': ['freq', 'q']}, changes none; log2_no_lr_schedule: design log2, "
        "feature normaliser {'kind': 'minmax', 'log_kinds': ['freq', 'q']}, "
        "changes {'training': {'lr_schedule': False}}\n"
    ) in markdown
    assert markdown.endswith("}}\n")
    assert "nan" not in markdown.lower().split()


def test_a_missing_template_value_is_an_error(context):
    incomplete = {key: value for key, value in context.items() if key != "protocol_note"}
    with pytest.raises(jinja2.UndefinedError, match="protocol_note"):
        render_markdown(incomplete)


def test_publish_results_takes_every_figure_from_the_markdown(context, report):
    markdown, _ = report
    doc, figures = publish_results(markdown, "images/results")
    assert list(figures) == [f"figure_{n}" for n in range(1, 8)]
    first = context["generated_figures"][0]
    assert figures["figure_1"] == base64.b64decode(first["src"].split(",", 1)[1])
    assert f"![{first['alt']}](images/results/figure_1.png)" in doc
    assert "base64" not in doc
