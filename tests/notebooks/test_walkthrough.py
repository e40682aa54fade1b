"""notebooks/walkthrough.ipynb: committed clean, and executes against a finished short run."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import sys
from pathlib import Path

import matplotlib.image
import nbformat
import numpy as np
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = PROJECT_ROOT / "notebooks" / "walkthrough.ipynb"
EXECUTED_NAME = "walkthrough.executed.ipynb"
CELL_TIMEOUT_S = 300
KERNEL = "python3"
MIN_FIGURES = 3  # term curves, generated presets vs humans, the morph
MORPH_STEPS = 7
IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")


def _text(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.extend(output.data.get(kind, "") for kind in ("text/plain", "text/html"))
    return "\n".join(parts)


def _tagged(notebook: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    cells = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _search(pattern: str, cell: nbformat.NotebookNode) -> re.Match[str]:
    match = re.search(pattern, _text(cell))
    assert match, f"no output matching {pattern!r} in cell:\n{cell.source}\n---\n{_text(cell)}"
    return match


def _figures(notebook: nbformat.NotebookNode) -> list[np.ndarray]:
    """Every PNG the notebook displayed, decoded to an RGB(A) array."""
    return [
        matplotlib.image.imread(io.BytesIO(base64.b64decode(output.data["image/png"])))
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


def _artifact_path(tmp_path: Path) -> Path:
    """Where the executed notebook is kept: $NEM_ARTIFACTS_DIR/notebooks/ (CI) or tmp_path."""
    root = os.environ.get("NEM_ARTIFACTS_DIR")
    folder = Path(root) / "notebooks" if root else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / EXECUTED_NAME


@pytest.mark.notebook
def test_walkthrough_is_committed_clean() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code[0].source.strip() == "%load_ext kedro.ipython"
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.metadata.kernelspec.name == KERNEL
    assert notebook.metadata.language_info.name == "python"
    assert notebook.metadata.language_info.version == "3.11"


@pytest.mark.notebook
@pytest.mark.integration
def test_walkthrough_executes_against_a_finished_run(short_run, tmp_path: Path) -> None:
    project = Path(short_run["project"])
    notebooks = project / "notebooks"
    notebooks.mkdir(exist_ok=True)
    shutil.copy(NOTEBOOK, notebooks / NOTEBOOK.name)
    notebook = nbformat.read(notebooks / NOTEBOOK.name, as_version=4)

    # The kernel must be this interpreter (the project's venv), not another Python.
    kernel_cmd = KernelManager(kernel_name=KERNEL).format_kernel_cmd()
    assert os.path.samefile(kernel_cmd[0], sys.executable), kernel_cmd

    client = NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(notebooks)}},  # the kernel's working directory
    )
    executed = _artifact_path(tmp_path)
    # The kernel inherits os.environ: point it at this project's store, whatever the
    # short_run fixture's own monkeypatch left behind.
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
        monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
        try:
            client.execute()  # a failing cell raises CellExecutionError with its traceback
        finally:
            nbformat.write(notebook, executed)  # kept even when a cell failed

    catalog = short_run["catalog"]
    settings = catalog.load("settings_filtered")
    counts = _search(
        r"settings_filtered: (\d+) rows, (\d+) terms, (\d+) contributors",
        _tagged(notebook, "dataset-counts"),
    )
    assert [int(value) for value in counts.groups()] == [
        len(settings),
        settings["term"].nunique(),
        settings["contributor_id"].nunique(),
    ]

    presets = _search(
        r"max \|difference\| to log2\.generated_presets: (\S+); match: True",
        _tagged(notebook, "preset-check"),
    )
    assert float(presets.group(1)) < 1e-3

    morph = _search(
        r"morph: (\d+) of (\d+) decoded settings inside the plug-in limits; all valid: True",
        _tagged(notebook, "morph-validity"),
    )
    assert int(morph.group(1)) == int(morph.group(2)) == MORPH_STEPS

    figures = _figures(notebook)
    assert len(figures) >= MIN_FIGURES
    for figure in figures:
        height, width = figure.shape[:2]
        assert width >= 400, figure.shape
        assert height >= 200, figure.shape
        assert np.ptp(figure[..., :3]) > 0.5  # drawn on, not a blank canvas

    outputs = "\n".join(_text(cell) for cell in notebook.cells if cell.cell_type == "code")
    assert not IPV4.findall(outputs), "an IP-address-like string appears in the outputs"
    # The notebook reads the run; it must not open a tracking store of its own beside it.
    assert not (notebooks / "mlflow.db").exists()
    assert not (notebooks / "mlruns").exists()
