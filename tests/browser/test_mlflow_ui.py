"""The MLflow UI, as the README tells a newcomer to use it, in headless Chromium."""

from __future__ import annotations

import contextlib
import time

import pytest
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import FIRST_FOLD, PAGE_TIMEOUT_S, TrackedRuns, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def click_text(browser, text: str, tag: str = "*") -> None:
    """Click the first visible element whose own text is ``text``.

    Retried while the page re-renders it (a stale or covered element).
    """
    xpath = f"//{tag}[normalize-space(text())='{text}']"

    def attempt(driver) -> bool:
        try:
            element = ec.element_to_be_clickable((By.XPATH, xpath))(driver)
            if not element:
                return False
            element.click()
        except (StaleElementReferenceException, ElementClickInterceptedException):
            return False
        return True

    WebDriverWait(browser, PAGE_TIMEOUT_S).until(attempt)


def run_row(browser, run_id: str):
    """The runs table's row of ``run_id`` (the pinned part with checkbox and name)."""
    selector = f".ag-pinned-left-cols-container [row-id='{run_id}']"
    return WebDriverWait(browser, PAGE_TIMEOUT_S).until(
        lambda driver: driver.find_element(By.CSS_SELECTOR, selector)
    )


#: The runs table loads the newest 100 runs at a time (compare's nested runs count).
MAX_LOAD_MORE = 5


def open_runs_page(browser, mlflow_ui: str, *wanted: str) -> str:
    """README: open the UI, click "Model training", then the experiment; the page text.

    Then, as the README says, click "Load more" below the table until every run name in
    ``wanted`` is listed (compare's ~100 nested runs fill the first page).
    """
    browser.get(mlflow_ui)
    click_text(browser, "Model training")
    click_text(browser, "neural_eq_morphing")
    text = wait_for_text(browser, "Run Name", "compare")
    for _ in range(MAX_LOAD_MORE):
        if all(name in text for name in wanted):
            break
        click_text(browser, "Load more")
        with contextlib.suppress(AssertionError):  # not there yet: load more again
            text = wait_for_text(browser, *wanted, timeout=10)
        text = browser.find_element(By.TAG_NAME, "body").text
    return text


def test_runs_page_lists_the_runs_by_design_and_seed(
    browser, mlflow_ui: str, tracked: TrackedRuns, screenshot
):
    name = tracked.default_run["info"]["run_name"]  # "log2 seed 42"
    text = open_runs_page(browser, mlflow_ui, name)
    assert name in text
    screenshot("mlflow_runs")


def test_compare_log1_with_log2_by_the_readme_clicks(
    browser, mlflow_ui: str, tracked: TrackedRuns, screenshot
):
    open_runs_page(browser, mlflow_ui)
    # Expand the comparison's parent run to show its nested runs.
    run_row(browser, tracked.compare_run["info"]["run_id"]).find_element(
        By.TAG_NAME, "button"
    ).click()
    names = [f"compare · {design} {FIRST_FOLD} seed 42" for design in ("log1", "log2")]
    chosen = [tracked.child(name) for name in names]
    for run in chosen:
        checkbox = run_row(browser, run["info"]["run_id"]).find_element(
            By.CSS_SELECTOR, "input.ag-checkbox-input"
        )
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", checkbox)
        checkbox.click()
    click_text(browser, "Compare", "span")
    key = "davies_bouldin"
    # The comparison table shows both runs' values (3 decimals at this magnitude).
    values = [
        f"{metric['value']:.3f}".rstrip("0").rstrip(".")
        for run in chosen
        for metric in run["data"]["metrics"]
        if metric["key"] == key
    ]
    assert len(values) == 2
    wait_for_text(browser, *names, key, *values)
    assert "compare-runs" in browser.current_url
    screenshot("mlflow_compare_log1_log2", full_page_height=1800)


def test_run_page_shows_metric_charts(browser, mlflow_ui: str, tracked: TrackedRuns, screenshot):
    run = tracked.default_run
    experiment_id = tracked.experiment["experiment_id"]
    browser.get(
        f"{mlflow_ui}/#/experiments/{experiment_id}/runs/{run['info']['run_id']}/model-metrics"
    )
    n_metrics = len(run["data"]["metrics"])
    # One chart per metric; the per-epoch histories are drawn against "Step".
    wait_for_text(browser, f"Model metrics\n({n_metrics})", "log2.contrastive_weight", "Step")
    search = browser.find_element(By.CSS_SELECTOR, "input[placeholder*='earch']")
    search.send_keys("loss")
    wait_for_text(browser, "log2.train_loss", "log2.val_loss")
    time.sleep(2)  # let the charts draw before the picture
    screenshot("mlflow_metric_charts")


def test_artifacts_show_the_plots_and_the_model(
    browser, mlflow_ui: str, tracked: TrackedRuns, screenshot
):
    run = tracked.default_run
    experiment_id = tracked.experiment["experiment_id"]
    base = f"{mlflow_ui}/#/experiments/{experiment_id}/runs/{run['info']['run_id']}"
    browser.get(f"{base}/artifacts/log2/plots/term_curves.png")
    wait_for_text(browser, "term_curves.png", "morph.png", "latent_map.png")
    # The selected PNG is shown as an image (the UI fetches it and shows it in an <img>).
    width = WebDriverWait(browser, PAGE_TIMEOUT_S).until(
        lambda driver: (
            max(
                (
                    driver.execute_script("return arguments[0].naturalWidth", img)
                    for img in driver.find_elements(By.TAG_NAME, "img")
                ),
                default=0,
            )
            > 400
        )
    )
    assert width
    screenshot("mlflow_artifact_plot")
    browser.get(base)
    wait_for_text(browser, "log2_semantic_eq")
    screenshot("mlflow_run_overview")


def test_compare_run_shows_the_report(browser, mlflow_ui: str, tracked: TrackedRuns, screenshot):
    run = tracked.compare_run
    experiment_id = tracked.experiment["experiment_id"]
    browser.get(
        f"{mlflow_ui}/#/experiments/{experiment_id}/runs/{run['info']['run_id']}"
        "/artifacts/compare/report.html"
    )
    wait_for_text(browser, "report.html", "report.md", "summary.csv")
    screenshot("mlflow_compare_report_artifact")
