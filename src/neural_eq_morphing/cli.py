"""Project commands: Kedro's ``run`` and kedro-mlflow's ``mlflow ui``, with two changes.

Kedro loads this module's ``cli`` group before its own and its plugins' commands, so the
commands here replace theirs (https://docs.kedro.org/en/stable/extend/common_use_cases/).

* ``kedro run`` is Kedro's own command; a user error anywhere in the run (a bad raw
  file, a bad parameter, missing data; :class:`~neural_eq_morphing.errors.UserError`)
  ends it with one line, ``Error: <what was wrong and what to do>``, and status 1. Any
  other exception is a bug and keeps its traceback.
* ``kedro mlflow ui`` starts the MLflow UI as kedro-mlflow's does (same options, same
  ``mlflow.yml``), but in a process group of its own that it stops when it is stopped:
  SIGTERM, SIGINT (Ctrl-C) or SIGHUP to the ``kedro`` process stop the server and its
  workers too, instead of leaving them serving. The other ``kedro mlflow`` commands are
  kedro-mlflow's.
"""

from __future__ import annotations

import copy
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro_mlflow.framework.cli import cli as kedro_mlflow_cli

from neural_eq_morphing.errors import user_error_in

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _one_line_user_errors(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command's callback so that user errors end it with one line, no traceback."""

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as error:
            user_error = user_error_in(error)
            if user_error is None:
                raise
            message = " ".join(str(user_error).split())
            raise click.ClickException(message) from None

    return wrapper


def _with_user_errors(command: click.Command) -> click.Command:
    wrapped = copy.copy(command)
    wrapped.callback = _one_line_user_errors(command.callback)
    return wrapped


def serve_until_stopped(command: Sequence[str]) -> int:
    """Run ``command`` in a new process group; stop the whole group when this process is.

    The server (``mlflow ui`` starts a uvicorn server and its workers) gets SIGTERM when
    this process receives SIGTERM, SIGINT or SIGHUP, or exits any other way, and SIGKILL
    if it is still there 10 s later. SIGKILL of this process cannot be caught: the
    server then outlives it (stop it with ``kill -- -<pid of mlflow>``).

    Returns:
        The server's exit status.
    """
    server = subprocess.Popen(list(command), start_new_session=True)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    try:
        return server.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@click.command(name="ui")
@click.option("--env", "-e", default="local", help="The configuration environment to use.")
@click.option("--port", "-p", default=None, help="The port to listen on (mlflow.yml ui.port).")
@click.option(
    "--host",
    "-h",
    default=None,
    help="The address to listen on (mlflow.yml ui.host, 127.0.0.1). Only this machine can "
    "reach 127.0.0.1; see docs/shared_tracking_and_storage.md before opening it wider.",
)
def ui(env: str, port: str | None, host: str | None) -> None:
    """Open the MLflow UI on the project's tracking store; stopping it stops the server."""
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415
    from kedro.utils import find_kedro_project  # noqa: PLC0415

    project_path = find_kedro_project(Path.cwd()) or Path.cwd()
    bootstrap_project(project_path)
    with KedroSession.create(project_path=project_path, env=env) as session:
        config = session.load_context().mlflow
    tracking_uri = config.server.mlflow_tracking_uri
    if tracking_uri.startswith("http"):
        click.echo(f"The tracking store is a server: open {tracking_uri}")
        return
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host or config.ui.host,
        "--port",
        str(port or config.ui.port),
    ]
    status = serve_until_stopped(command)
    if status not in (0, -signal.SIGTERM):
        raise click.ClickException(f"the MLflow UI stopped with status {status}")


class _MlflowCommands(kedro_mlflow_cli.KedroClickGroup):
    """kedro-mlflow's ``kedro mlflow`` group with this project's ``ui``."""

    def reset_commands(self) -> None:
        super().reset_commands()
        if "ui" in self.commands:
            self.commands["ui"] = ui


@click.group(name="neural_eq_morphing")
def cli() -> None:
    """Project commands (they replace Kedro's and kedro-mlflow's of the same name)."""


cli.add_command(_with_user_errors(kedro_run))


@cli.group(name="mlflow", cls=_MlflowCommands)
def mlflow_commands() -> None:
    """Use mlflow-specific commands inside kedro project."""
