"""The compare report: Jinja2 template for the words, markdown-it-py for the HTML."""

from __future__ import annotations

import base64
import html
import re

import jinja2
import pandas as pd
import pytest

from neural_eq_morphing.pipelines.compare.nodes import (
    fit_validation_folds,
    judge_comparison,
    strongest_baselines,
    summarise_comparison,
)
from neural_eq_morphing.pipelines.compare.report import (
    Summary,
    generation_sentences,
    markdown_table,
    render_html,
    render_markdown,
    render_report,
    report_context,
)
from neural_eq_morphing.pipelines.publish_results.nodes import publish_results
from tests.conftest import SMALL_EVALUATION, project_parameters
from tests.pipelines.compare.conftest import TINY_COMPARE, compared_tiny

DESIGNS = project_parameters("designs")["designs"]
COMPARE = {
    **TINY_COMPARE,
    "configurations": {
        "log2_short": {
            "design": "log2",
            "label": "Log 2 | one epoch",  # a pipe in a table cell
            "training": {"epochs": 1},
        }
    },
    "claimed": {
        "log1": {"silhouette": -0.5, "davies_bouldin": 23.06, "max_frequency_hz": 1.6e6},
        "log2": {"silhouette": 0.07, "davies_bouldin": 4.69, "valid_share": 1.0},
    },
}


def _inputs() -> tuple:
    designs = {name: dict(spec) for name, spec in DESIGNS.items()}
    designs["log1"]["label"] = "Log 1 <original>"
    (
        settings,
        configurations,
        fold_table,
        contexts,
        baselines,
        fold_metrics,
        reproduction,
        _,
        examples,
        _,
    ) = compared_tiny(designs, COMPARE)
    seed_runs = pd.DataFrame(
        [
            {
                "run_name": f"{row.configuration} {row.fold} seed {row.seed}",
                "run_id": f"run{index}",
                "parent_run_id": "parent0",
                "git_commit": "abc123",
            }
            for index, row in enumerate(fold_metrics.itertuples())
        ]
    )
    provenance = {"sha256": "f" * 64, "matches_published": False}
    validation = fit_validation_folds(contexts, settings, fold_table)
    return (
        summarise_comparison(fold_metrics, baselines, COMPARE),
        judge_comparison(fold_metrics, baselines, configurations, COMPARE),
        fold_metrics,
        baselines,
        strongest_baselines(validation, designs),
        reproduction,
        fold_table,
        settings,
        contexts,
        examples,
        seed_runs,
        provenance,
        configurations,
        COMPARE,
        SMALL_EVALUATION,
    )


@pytest.fixture(scope="module")
def inputs() -> tuple:
    return _inputs()


@pytest.fixture(scope="module")
def context(inputs) -> dict:
    return report_context(*inputs)


@pytest.fixture(scope="module")
def report(context) -> tuple[str, str]:
    return render_report(context)


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


FIGURES = ("per_fold_figures", "generated_figures", "training_figures")


def test_the_html_holds_every_table_and_figure_of_the_markdown(context, report):
    markdown, page = report
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Neural semantic EQ across contributors</title>" in page
    tables = [
        context[name]
        for name in (
            "verdict_table",
            "best_design_table",
            "reference_table",
            "fold_summary",
            "metric_descriptions",
            "construction_table",
            "ablation_table",
            "reproduction_table",
            "all_verdicts_table",
            "generation_table",
            "generation_per_fold",
            "distribution_table",
            "morph_distribution_table",
            "strongest_table",
        )
    ]
    tables += [*context["family_tables"].values(), *context["per_fold_tables"].values()]
    assert page.count("<table>") == len(tables)
    for table in tables:
        headers = [html.escape(str(c), quote=False) for c in table.columns if c]
        assert all(f"<th>{header}</th>" in page for header in headers)
    figures = [figure for name in FIGURES for figure in context[name]]
    # per-fold values, generated EQ, one training figure per design
    assert len(figures) == 2 + len(DESIGNS)
    for figure in figures:
        assert figure["src"].startswith("data:image/png;base64,")
        assert len(figure["alt"]) > 60  # says what the figure shows, not just its name
        assert f"![{figure['alt']}]({figure['src']})" in markdown
        alt = html.escape(figure["alt"], quote=False)
        assert f'<img src="{figure["src"]}" alt="{alt}" />' in page


def test_the_label_with_a_pipe_is_one_cell_of_the_ablation_table(report):
    markdown, page = report
    assert "| Log 2 \\| one epoch | silhouette |" in markdown
    ablation = page.split("Ablation")[1].split("<h2>")[0]
    rows = [row for row in ablation.split("<tr>") if "one epoch" in row]
    assert rows
    for row in rows:
        cells = _cells(row)
        assert len(cells) == 6
        assert cells[0] == "Log 2 | one epoch"


def test_text_is_escaped_in_the_html(report):
    _, page = report
    assert "Log 1 &lt;original&gt;" in page
    assert "<original>" not in page
    assert "<code>compare.timing.&lt;configuration&gt;.wall_s</code>" in page


def test_the_report_says_what_it_measured(context, report, inputs):
    markdown, _ = report
    for heading in (
        "# Neural semantic EQ on SAFE-DB: does it beat simple baselines across contributors?",
        "## Verdict",
        "## Generation: the word-only optimum, and the floor",
        "## Distributions of drawn settings",
        "## Folds",
        "## Models and baselines, per metric family",
        "## Fold by fold",
        "## Guaranteed by construction, not learned",
        "## Ablation: one change at a time, on the same folds",
        "## Reproduction of the original write-up (its protocol, not this one)",
        "## Training curves",
        "## All verdicts",
        "## Provenance",
    ):
        assert f"\n{heading}\n" in f"\n{markdown}"
    assert "2 folds grouped by contributor, 2 seed(s) per fold (1, 2)" in markdown
    # one verdict sentence per design, generated from the verdicts
    assert len(context["verdict_sentences"]) == len(DESIGNS)
    assert all(
        s.startswith("**") and "across contributors" in s for s in context["verdict_sentences"]
    )
    # every fold of the fold table is a row of the folds table
    fold_table = inputs[6]
    assert context["fold_summary"]["fold"].tolist() == list(dict.fromkeys(fold_table["fold"]))
    # the verdict table's cells are the summary's numbers
    summary = inputs[0].set_index(["configuration", "metric"])
    table = context["verdict_table"].set_index("metric")
    first = table.index[0]  # the metrics whose strongest baseline the validation parts chose
    assert set(table.index) == set(inputs[4])
    mean = summary.loc[("log2", first), "mean"]
    row = table.loc[first]
    assert row[DESIGNS["log2"]["label"]].startswith(f"{mean:.3f} [")
    # Range validity: guaranteed by Log 2's bounded output, measured for Log 1's z-score inverse
    why = context["construction_table"].set_index("configuration")["why"]
    assert why[DESIGNS["log2"]["label"]].startswith("guaranteed by construction")
    assert why["Log 1 <original>"].startswith("not guaranteed")
    assert f"- SAFE-DB SHA-256 {'f' * 64} (NOT published)\n" in markdown
    assert "- git commit: abc123\n" in markdown
    runs = (len(DESIGNS) + 1) * 2 * 2  # (designs + one ablation) × folds × seeds
    assert f"MLflow parent run parent0 with {runs} nested runs" in markdown
    assert "nan" not in markdown.lower().split()


def test_every_design_is_judged_against_log2_and_the_questions_are_answered(context, inputs):
    verdicts = inputs[1]
    others = [d for d in DESIGNS if d != "log2"]
    against_log2 = verdicts[verdicts["against"] == "log2"]
    assert set(against_log2["configuration"]) == {*others, "log2_short"}
    table = context["reference_table"].set_index("metric")
    assert list(table.columns) == [
        "better",
        DESIGNS["log2"]["label"],
        *(DESIGNS[d]["label"] if d != "log1" else "Log 1 <original>" for d in others),
    ]
    row = verdicts[
        (verdicts["configuration"] == others[-1])
        & (verdicts["against"] == "log2")
        & (verdicts["metric"] == "silhouette")
    ].iloc[0]
    assert table.loc["silhouette", DESIGNS[others[-1]]["label"]].endswith(row["verdict"])
    # One plain answer per question, naming the baseline and a yes or a no.
    answers = context["question_answers"]
    assert len(answers) == 2
    assert answers[0].startswith("**Does any design beat the normalised parameters on probe_auc?**")
    assert answers[1].startswith(
        "**Does any design beat the resampled training presets on energy_distance_db?**"
    )
    assert all(" Yes: " in a or " No. " in a for a in answers)
    # Generation is answered against the word-only optimum, with the floor beside it.
    sentences = context["generation_sentences"]
    assert len(sentences) == len(DESIGNS)
    for sentence in sentences:
        assert "the word-only optimum" in sentence
        assert " matches " in sentence or " does not match " in sentence
        assert "split-half noise" in sentence
    rows = context["generation_table"].set_index("")
    assert "split-half floor of the held-out curves" in rows.index
    assert rows.loc[DESIGNS["log2"]["label"], "smallest detectable (dB)"] != "n/a"
    distribution = context["distribution_table"].set_index("")
    for reference in (
        "held-out settings, first half (real data)",
        "resampled training presets",
        "per-word Gaussian of the training presets",
        "mean preset",
    ):
        assert reference in distribution.index
    assert distribution.loc["mean preset", "knn_recall"].startswith("0.000")
    best = context["best_design_table"].set_index("metric")
    assert set(best["best design"]) <= {
        "Log 1 <original>",
        *(spec["label"] for spec in DESIGNS.values()),
    }


def test_a_missing_template_value_is_an_error(context):
    incomplete = {key: value for key, value in context.items() if key != "verdict_table"}
    with pytest.raises(jinja2.UndefinedError, match="verdict_table"):
        render_markdown(incomplete)


def test_publish_results_takes_every_figure_from_the_markdown(context, report):
    markdown, _ = report
    doc, figures = publish_results(markdown, "images/results")
    assert list(figures) == [f"figure_{n}" for n in range(1, 3 + len(DESIGNS))]
    first = context["per_fold_figures"][0]
    assert figures["figure_1"] == base64.b64decode(first["src"].split(",", 1)[1])
    assert f"![{first['alt']}](images/results/figure_1.png)" in doc
    assert "base64" not in doc


def test_the_generation_sentence_matches_the_verdict_against_the_optimum():
    summary = Summary(
        pd.DataFrame(
            [
                {
                    "configuration": "held_out_half",
                    "metric": "generation_floor_db",
                    "mean": 0.8,
                    "ci_low": 0.5,
                    "ci_high": 1.1,
                }
            ]
        )
    )

    def row(name, difference, low, high, verdict):
        return {
            "configuration": name,
            "against": "mean_curve",
            "metric": "generation_rms_db",
            "difference": difference,  # positive: the design's error is smaller
            "ci_low": low,
            "ci_high": high,
            "verdict": verdict,
            "detectable": 0.4,
            "borderline": False,
        }

    verdicts = pd.DataFrame(
        [
            row("same", -0.05, -0.2, 0.1, "no detectable difference"),
            row("worse", -1.0, -1.6, -0.4, "worse"),
            row("better", 0.3, 0.1, 0.5, "better"),
        ]
    )
    same, worse, better = generation_sentences(summary, verdicts, ["same", "worse", "better"], {})
    assert same.startswith("**same matches the word-only optimum within 0.200 dB**")
    assert worse.startswith("**worse does not match the word-only optimum**")
    assert "1.000 dB [0.400, 1.600] above" in worse
    assert better.startswith("**better comes out below the word-only optimum**")
    assert all("0.400 dB" in s and "noise is 0.800 dB" in s for s in (same, worse, better))
