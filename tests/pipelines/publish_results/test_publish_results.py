"""docs/results.md is the compare report with its figures as files."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from matplotlib.figure import Figure

from neural_eq_morphing.pipelines.publish_results.nodes import HEADER, publish_results
from neural_eq_morphing.runs import RunLedger


def png(width: int) -> bytes:
    figure = Figure(figsize=(width, 1))
    figure.subplots().plot([0, 1])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def embedded(data: bytes, caption: str = "figure") -> str:
    return f"![{caption}](data:image/png;base64,{base64.b64encode(data).decode()})"


def test_figures_become_files_and_the_text_stays():
    first, second = png(2), png(3)
    table = "| a | b |\n|---|---|\n"
    report = f"# Report\n\n{table}\n{embedded(first)}\ntext\n{embedded(second, 'x')}\n"
    doc, figures = publish_results(report, "images/results")
    assert figures == {"figure_1": first, "figure_2": second}
    assert doc.startswith(HEADER)
    assert doc[len(HEADER) :] == (
        "# Report\n\n| a | b |\n|---|---|\n\n"
        "![figure](images/results/figure_1.png)\ntext\n![x](images/results/figure_2.png)\n"
    )
    assert "base64" not in doc


def test_a_report_without_figures_is_refused():
    with pytest.raises(ValueError, match="no embedded figure"):
        publish_results("# Report\n", "images")


def test_an_embedded_non_png_is_refused():
    with pytest.raises(ValueError, match="not a PNG"):
        publish_results(embedded(b"GIF89a"), "images")


def _save_report(project: Path, text: str, *, finished: bool) -> None:
    """Save a compare report as a run would; record the run as finished if it was."""
    with KedroSession.create(project_path=project) as session:
        session.load_context().catalog.save("compare_report_md", text)
    version = sorted((project / "data/08_reporting/compare/report.md").iterdir())[-1].name
    if finished:
        ledger = RunLedger(project / "data/run_ledger")
        ledger.start(version, {})
        ledger.finish(version, "done", {"outputs": ["compare_report_md"]})


def test_pipeline_writes_docs_from_the_newest_report(kedro_project: Path):
    _save_report(kedro_project, f"# Old\n{embedded(png(2))}\n{embedded(png(2))}\n", finished=True)
    # A stale figure from an earlier, longer report must not survive.
    stale = kedro_project / "docs/images/results/figure_9.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    newest = png(4)
    _save_report(kedro_project, f"# Newest\n{embedded(newest)}\n", finished=True)
    # A report of a run that never finished is not "the newest".
    _save_report(kedro_project, f"# Unfinished\n{embedded(png(3))}\n", finished=False)
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=["publish_results"])
    doc = (kedro_project / "docs/results.md").read_text()
    assert "# Newest" in doc
    assert "# Old" not in doc
    assert "# Unfinished" not in doc
    figures = sorted(p.name for p in (kedro_project / "docs/images/results").iterdir())
    assert figures == ["figure_1.png"]
    # The catalog writes the PNG's bytes unchanged.
    assert (kedro_project / "docs/images/results/figure_1.png").read_bytes() == newest
