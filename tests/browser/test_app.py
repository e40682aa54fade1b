"""The web app (`neural-eq-morphing app`) driven in headless Chromium on 127.0.0.1."""

from __future__ import annotations

import io
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import PAGE_TIMEOUT_S, serve

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture(scope="module")
def app(finished_project: Path) -> Iterator[str]:
    """`neural-eq-morphing app` on the finished project; the base URL."""
    with serve(
        ["neural-eq-morphing", "app", "--host", "127.0.0.1", "--port", "{port}"],
        finished_project,
        "/",
        "semantic_eq_app",
    ) as base:
        yield base


def _wait(condition, what: str, timeout: float = PAGE_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _state(browser) -> tuple[str, str]:
    """The parameter table's text and the curve image's source."""
    table = browser.find_element(By.ID, "parameters").text
    curve = browser.find_element(By.CSS_SELECTOR, "#curve img").get_attribute("src")
    return table, curve


def _set_number(browser, element_id: str, value: str) -> None:
    box = browser.find_element(By.CSS_SELECTOR, f"#{element_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value, Keys.ENTER)


def _changed(browser, before: tuple[str, str]) -> tuple[str, str]:
    return _wait(lambda: (now := _state(browser)) != before and now[0] and now, "the update")


def test_the_app_morphs_and_plays_the_processed_audio(app, browser, screenshot):
    browser.set_window_size(1600, 1400)
    browser.get(app)
    start = _wait(lambda: (s := _state(browser))[0].count("_") >= 13 and s[1] and s, "the curve")
    assert "low_shelf_gain_db" in start[0]
    screenshot("app_start")

    _set_number(browser, "morph", "0.9")  # the morph slider
    morphed = _changed(browser, start)
    _set_number(browser, "amount", "-0.5")  # the amount slider: the opposite, half strength
    amounted = _changed(browser, morphed)
    words = browser.find_element(By.CSS_SELECTOR, "#second input")  # another word
    words.click()
    words.send_keys(Keys.CONTROL, "a")
    words.send_keys("boomy", Keys.ENTER)
    _changed(browser, amounted)
    screenshot("app_morphed")

    browser.find_element(By.ID, "process").click()
    report = _wait(
        lambda: browser.find_element(By.CSS_SELECTOR, "#report textarea").get_attribute("value"),
        "the processing report",
        timeout=120,
    )
    assert "LUFS" in report
    assert "peak" in report
    play = browser.find_element(By.CSS_SELECTOR, "#processed button.play-pause-button")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", play)
    play.click()
    _wait(lambda: play.get_attribute("aria-label") == "Pause", "the processed audio to play")
    screenshot("app_playing")

    # The audio reaches the browser as a file: the processed WAV, whole.
    link = browser.find_element(By.CSS_SELECTOR, "#processed a[download]").get_attribute("href")
    with urllib.request.urlopen(link, timeout=30) as response:
        data, rate = soundfile.read(io.BytesIO(response.read()))
    assert rate == 44_100
    assert len(data) == 6 * 44_100


def _parameters(browser) -> list[str]:
    """The 13 parameters' names and values on show, once no update is in flight."""
    text = browser.find_element(By.ID, "parameters").text
    lines = text.splitlines()
    if "processing" in text or "low_shelf_gain_db" not in lines:
        return []
    return lines[lines.index("low_shelf_gain_db") :]


def _new_parameters(browser, before: list[str]) -> list[str]:
    return _wait(lambda: (now := _parameters(browser)) and now != before and now, "new values")


def test_another_one_draws_new_settings_reproducibly(app, browser, screenshot):
    browser.set_window_size(1600, 1400)

    def fresh() -> list[str]:
        browser.get(app)
        return _wait(lambda: len(_parameters(browser)) >= 26 and _parameters(browser), "values")

    start = fresh()
    browser.find_element(By.ID, "another").click()
    first = _new_parameters(browser, start)
    browser.find_element(By.ID, "another").click()
    second = _new_parameters(browser, first)
    assert second != start
    screenshot("app_another")
    # a new page starts the draws again: its first sample is the same setting
    assert fresh() == start
    browser.find_element(By.ID, "another").click()
    assert _new_parameters(browser, start) == first


def test_the_app_listens_on_127_0_0_1_only(app):
    assert app.startswith("http://127.0.0.1:")
