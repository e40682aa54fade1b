"""Fixtures of the browser suite: a finished project, its servers on 127.0.0.1, Chromium.

The suite checks what a newcomer meets after the README's commands: the MLflow UI (through
`kedro mlflow ui`, the README's command), its REST API, `kedro viz` (live and the static
`kedro viz build` site) and the compare report, in Debian's headless Chromium driven by
its chromedriver. Nothing is downloaded: both come from apt (`.ci/run` installs them).

Which project is checked:

- ``NEM_BROWSER_PROJECT=<dir>``: a project where the README's commands have already run
  (`kedro run`, `kedro run --pipelines compare`, `kedro viz build`); `.ci/run` points it
  at the clean clone.
- otherwise a throw-away copy of the project with the real SAFE-DB file, on which the
  same commands run with fewer epochs and seeds.

Screenshots and server logs go to ``$NEM_ARTIFACTS_DIR`` (default ``test-artifacts/``).
Without Chromium the UI tests are skipped, unless ``NEM_REQUIRE_BROWSER=1`` (as in CI),
which makes a missing browser a failure.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.conftest import PROJECT_ROOT, SHORT_EPOCHS, make_real_project

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
EXPERIMENT = "neural_eq_morphing"
#: The short comparison when the suite makes its own project (Log 2 gets SHORT_EPOCHS).
SHORT_COMPARE = {"n_seeds": 2, "epochs": SHORT_EPOCHS, "folds.min_rows": 200, "folds.k": 2}
#: The first fold of the comparison on the real file: its largest contributor left out.
FIRST_FOLD = "loco-c0001"
SERVER_START_TIMEOUT_S = 120
PAGE_TIMEOUT_S = 60


def artifacts_dir() -> Path:
    """Where screenshots and server logs are kept (``$NEM_ARTIFACTS_DIR``)."""
    return Path(os.environ.get("NEM_ARTIFACTS_DIR") or PROJECT_ROOT / "test-artifacts")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Below 49152: kedro-viz refuses ports in the ephemeral range the OS hands out.
    """
    for port in random.Random().sample(range(20000, 49000), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1 between 20000 and 49000")


def project_env(**extra: str) -> dict[str, str]:
    """The environment a user has in the project: its own MLflow store, no telemetry."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"KEDRO_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1", **extra}
    return env


def run_command(args: list[str], cwd: Path, log: Path) -> None:
    """Run one README command in ``cwd``; fail with the end of its output if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        result = subprocess.run(
            args, check=False, cwd=cwd, env=project_env(), stdout=out, stderr=out
        )
    if result.returncode != 0:
        tail = log.read_text()[-3000:]
        pytest.fail(f"`{' '.join(args)}` failed with exit code {result.returncode}:\n{tail}")


def newest_version(folder: Path) -> Path:
    """The newest file of a versioned catalog dataset, ``<folder>/<version>/<name>``."""
    versions = sorted(p for p in folder.iterdir() if p.is_dir())
    assert versions, f"no versions under {folder}"
    return versions[-1] / folder.name


@pytest.fixture(scope="session")
def finished_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The project whose outputs the browser suite checks (see the module docstring)."""
    given = os.environ.get("NEM_BROWSER_PROJECT")
    if given:
        path = Path(given).resolve()
        missing = [
            name
            for name in ("mlflow.db", "build/index.html", "data/08_reporting/compare/report.html")
            if not (path / name).exists()
        ]
        if missing:
            pytest.fail(
                f"NEM_BROWSER_PROJECT={path} is not a finished project: {missing} missing. "
                "Run `kedro run`, `kedro run --pipelines compare` and `kedro viz build` there."
            )
        yield path
        return
    logs = artifacts_dir() / "logs"
    with pytest.MonkeyPatch.context() as monkeypatch:
        path = make_real_project(tmp_path_factory.mktemp("browser"), monkeypatch)
        compare = ",".join(f"compare.{key}={value}" for key, value in SHORT_COMPARE.items())
        for args, log in [
            (["kedro", "run", "--params", f"designs.log2.training.epochs={SHORT_EPOCHS}"], "run"),
            (["kedro", "run", "--pipelines", "compare", "--params", compare], "compare"),
            (["kedro", "viz", "build"], "viz_build"),
        ]:
            run_command(args, path, logs / f"{log}.log")
        yield path


def wait_for_url(url: str, process: subprocess.Popen | None, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail early if the server process died."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:]
            pytest.fail(f"server for {url} exited ({process.returncode}):\n{tail}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    tail = log.read_text()[-3000:]
    pytest.fail(f"{url} did not answer within {SERVER_START_TIMEOUT_S} s:\n{tail}")


@contextlib.contextmanager
def serve(args: list[str], cwd: Path, ready_path: str, name: str, **env: str) -> Iterator[str]:
    """Start a server command on a free port of 127.0.0.1; stop it and its children after.

    ``args`` may hold ``{port}``. Yields the base URL once ``ready_path`` answers.
    """
    port = free_port()
    log = artifacts_dir() / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        process = subprocess.Popen(
            [arg.format(port=port) for arg in args],
            cwd=cwd,
            env=project_env(**env),
            stdout=out,
            stderr=out,
            start_new_session=True,  # its own process group: the workers stop with it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(base + ready_path, process, log)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def mlflow_ui(finished_project: Path) -> Iterator[str]:
    """`kedro mlflow ui` (the README's command) on the project's store; the base URL."""
    with serve(
        ["kedro", "mlflow", "ui", "--host", "127.0.0.1", "--port", "{port}"],
        finished_project,
        "/health",
        "mlflow_ui",
        # MLflow 3's background job runner is for GenAI evaluation; not used here.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    ) as base:
        yield base


@pytest.fixture(scope="session")
def kedro_viz(finished_project: Path) -> Iterator[str]:
    """`kedro viz run` on the project; the base URL."""
    with serve(
        ["kedro", "viz", "run", "--host", "127.0.0.1", "--port", "{port}", "--no-browser"],
        finished_project,
        "/api/main",
        "kedro_viz",
    ) as base:
        yield base


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep the static server out of the test output."""


@pytest.fixture(scope="session")
def static_site(finished_project: Path) -> Iterator[str]:
    """The project root over plain HTTP on 127.0.0.1 (the `kedro viz build` site, reports)."""
    handler = functools.partial(_QuietHandler, directory=str(finished_project))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class MlflowRest:
    """The few MLflow REST API calls the suite makes."""

    def __init__(self, base: str) -> None:
        self.base = base

    def get(self, endpoint: str, /, **query: str) -> dict[str, Any]:
        """GET ``endpoint`` with ``query``; the decoded JSON body."""
        return json.loads(self.raw(endpoint, **query))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``path``; the decoded JSON body."""
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def raw(self, endpoint: str, /, **query: str) -> bytes:
        """GET ``endpoint`` with ``query``; the body as bytes."""
        url = f"{self.base}{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()

    def experiment(self) -> dict[str, Any]:
        """The project's experiment."""
        return self.get("/api/2.0/mlflow/experiments/get-by-name", experiment_name=EXPERIMENT)[
            "experiment"
        ]

    def runs(self, experiment_id: str) -> list[dict[str, Any]]:
        """Every run of the experiment, newest first, each with a ``tags`` dict added."""
        runs, token = [], None
        while True:
            body = {"experiment_ids": [experiment_id], "max_results": 1000}
            if token:
                body["page_token"] = token
            page = self.post("/api/2.0/mlflow/runs/search", body)
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                break
        for run in runs:
            run["tags"] = {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}
        return sorted(runs, key=lambda run: run["info"]["start_time"], reverse=True)


@dataclass(frozen=True)
class TrackedRuns:
    """The runs the README's commands made, found through the REST API."""

    experiment: dict[str, Any]
    default_run: dict[str, Any]  # the newest `kedro run` (Log 2)
    compare_run: dict[str, Any]  # the newest `kedro run --pipelines compare`
    children: list[dict[str, Any]]  # its nested runs

    @staticmethod
    def param(run: dict[str, Any], key: str) -> str:
        """A logged parameter of ``run``."""
        params = {param["key"]: param["value"] for param in run["data"].get("params", [])}
        assert key in params, f"run {run['info']['run_name']!r} has no parameter {key!r}"
        return params[key]

    def child(self, name: str) -> dict[str, Any]:
        """The comparison's nested run ``name`` (e.g. "compare · log1 loco-c0001 seed 42")."""
        matches = [run for run in self.children if run["info"]["run_name"] == name]
        assert len(matches) == 1, f"expected one nested run {name!r}, found {len(matches)}"
        return matches[0]


@pytest.fixture(scope="session")
def rest(mlflow_ui: str) -> MlflowRest:
    """The MLflow REST API of the running UI server."""
    return MlflowRest(mlflow_ui)


@pytest.fixture(scope="session")
def tracked(rest: MlflowRest) -> TrackedRuns:
    """The newest default run, the newest comparison and its nested runs."""
    experiment = rest.experiment()
    runs = rest.runs(experiment["experiment_id"])
    top_level = [run for run in runs if "mlflow.parentRunId" not in run["tags"]]
    default = next(
        (run for run in top_level if run["tags"].get("design") == "log2"),
        None,
    )
    compare = next((run for run in top_level if run["info"]["run_name"] == "compare"), None)
    assert default is not None, "no run of `kedro run` (tag design=log2) in the experiment"
    assert compare is not None, "no run named 'compare' in the experiment"
    children = [
        run for run in runs if run["tags"].get("mlflow.parentRunId") == compare["info"]["run_id"]
    ]
    return TrackedRuns(experiment, default, compare, children)


def require_browser() -> None:
    """Skip (or, with ``NEM_REQUIRE_BROWSER=1``, fail) when Chromium is not installed."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if not missing:
        return
    message = (
        f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
        "(`apt-get install chromium chromium-driver`)"
    )
    if os.environ.get("NEM_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through its chromedriver (nothing is downloaded)."""
    require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1000",
        f"--user-data-dir={artifacts_dir() / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    shutil.rmtree(artifacts_dir() / "chromium-profile", ignore_errors=True)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(browser: Any, request: pytest.FixtureRequest):
    """Save the browser's page as ``<artifacts>/screenshots/<name>.png``; returns the path."""
    folder = artifacts_dir() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)

    def save(name: str, full_page_height: int | None = None) -> Path:
        path = folder / f"{name}.png"
        if full_page_height:
            browser.set_window_size(1600, full_page_height)
        try:
            assert browser.save_screenshot(str(path)), f"could not save {path}"
        finally:
            if full_page_height:
                browser.set_window_size(1600, 1000)
        return path

    return save


def wait_for_text(browser: Any, *texts: str, timeout: float = PAGE_TIMEOUT_S) -> str:
    """Wait until the page's visible text holds every one of ``texts``; returns that text."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            body = browser.find_element(By.TAG_NAME, "body").text
            if all(text in body for text in texts):
                return body
        time.sleep(0.5)
    missing = [text for text in texts if text not in body]
    raise AssertionError(
        f"{browser.current_url} did not show {missing} within {timeout} s; it showed:\n"
        f"{body[:2000]}"
    )
