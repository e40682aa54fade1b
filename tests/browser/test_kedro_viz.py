"""`kedro viz` (live and the `kedro viz build` static site) and the compare report."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import PAGE_TIMEOUT_S, newest_version, wait_for_text
from tests.conftest import KEDRO_VIZ_LAYERS

pytestmark = [pytest.mark.browser, pytest.mark.integration]

#: The default pipeline's modular pipelines: shared processing, then Log 2's stages.
MODULAR = {"data_processing", "log2", "log2.normalise", "log2.train", "log2.evaluate"}


def wait_for_graph(browser, expected: set[str]) -> set[str]:
    """Wait until the drawn graph has a node for each name in ``expected``; all names."""
    script = (
        "return Array.from(document.querySelectorAll('.pipeline-node'))"
        ".map(n => n.textContent.trim());"
    )
    names: set[str] = set()

    def drawn(driver) -> bool:
        names.clear()
        names.update(driver.execute_script(script))
        return expected <= names

    try:
        WebDriverWait(browser, PAGE_TIMEOUT_S).until(drawn)
    except Exception as error:
        raise AssertionError(
            f"{browser.current_url} drew {sorted(names)}; missing {sorted(expected - names)}"
        ) from error
    return names


def dismiss_popups(browser) -> None:
    """Close kedro-viz's first-visit banners so that the screenshot shows the graph."""
    for xpath in ("//button[normalize-space()='Dismiss']", "//*[@aria-label='Close']"):
        for element in browser.find_elements(By.XPATH, xpath):
            if element.is_displayed():
                element.click()


def test_viz_api_every_dataset_has_a_layer(kedro_viz: str):
    with urllib.request.urlopen(f"{kedro_viz}/api/main", timeout=30) as response:
        graph = json.load(response)
    assert graph["layers"] == list(KEDRO_VIZ_LAYERS)
    data = [node for node in graph["nodes"] if node["type"] == "data"]
    assert data
    assert [node["name"] for node in data if not node.get("layer")] == []
    assert set(graph["modular_pipelines"]) >= MODULAR


def test_live_viz_draws_the_default_pipeline(browser, kedro_viz: str, screenshot):
    browser.get(kedro_viz)
    # Collapsed, the graph is the raw file, the shared processing box and Log 2's box.
    names = wait_for_graph(browser, {"safe_db_raw", "data_processing", "log2"})
    assert "ingest_safe_db" not in names  # inside the collapsed data_processing box
    dismiss_popups(browser)
    screenshot("kedro_viz_default")


def test_live_viz_expanded_reads_as_the_story(browser, kedro_viz: str, screenshot):
    browser.get(f"{kedro_viz}/?expandAllPipelines=true")
    story = [
        "ingest_safe_db",
        "validate_settings",
        "split_by_contributor",
        "fit_normaliser",
        "train_model",
        "evaluate",
        "plot_term_curves",
    ]
    wait_for_graph(browser, set(story))
    dismiss_popups(browser)
    screenshot("kedro_viz_expanded")


def test_static_build_draws_the_compare_pipeline(browser, static_site: str, screenshot):
    browser.get(f"{static_site}/build/index.html?pid=compare&expandAllPipelines=true")
    names = wait_for_graph(browser, {"run_configurations", "render_report", "compare_report_html"})
    assert "train_model" not in names  # the comparison trains inside run_configurations
    dismiss_popups(browser)
    screenshot("kedro_viz_build_compare")


def test_compare_report_renders_with_every_figure(
    browser, static_site: str, finished_project: Path, screenshot
):
    report = newest_version(finished_project / "data/08_reporting/compare/report.html")
    browser.get(f"{static_site}/{report.relative_to(finished_project).as_posix()}")
    text = wait_for_text(browser, "Log 1", "Log 2", "Verdict", "leave_one_out", "LDA")
    assert "nan" not in text.lower().split()
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight]);"
    )
    assert len(images) >= 4  # per-fold values, generated EQ, a training figure per design
    assert all(width > 200 and height > 100 for width, height in images), images
    tables = browser.execute_script("return document.querySelectorAll('table').length;")
    assert tables >= 3
    height = browser.execute_script("return document.body.scrollHeight;")
    screenshot("compare_report", full_page_height=min(int(height) + 100, 8000))
