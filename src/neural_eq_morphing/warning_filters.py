"""Third-party warnings that carry nothing for a user of this project, and their filter.

Kedro routes Python warnings into its log (the ``py.warnings`` logger), where each one
prints as a multi-line block: five to nine of them before a command did anything. The
filter sits on that logger (a ``logging.Filter``), because MLflow re-enables its own
warning inside the call that emits it, past any ``warnings.filterwarnings``. Kedro's
logging configuration (``conf/logging.yml``) may only name classes from ``logging`` and
``kedro.logging``, so :func:`install` attaches the filter instead: from the project's
Kedro CLI hook (``neural_eq_morphing.cli_hooks``, loaded before any plugin's commands)
and from ``settings.py`` (sessions started from Python). Other warnings still show.
"""

from __future__ import annotations

import logging
import re
import warnings

UNINFORMATIVE_WARNINGS = (
    # omegaconf's deprecation of the API that Kedro and kedro-mlflow call on every config
    # load; nothing a user of this project can change.
    "register_new_resolver() is deprecated",
    # MLflow's hint to PythonModel authors, printed when kedro-mlflow's model class is
    # defined; about no model of this project.
    "Add type hints to the `predict` method",
)
"""Substrings of the filtered warnings' messages."""


def is_uninformative(message: str) -> bool:
    """Whether ``message`` is one of :data:`UNINFORMATIVE_WARNINGS`."""
    return any(pattern in message for pattern in UNINFORMATIVE_WARNINGS)


class UninformativeWarnings(logging.Filter):
    """Drop the log records of :data:`UNINFORMATIVE_WARNINGS`; let the rest through."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Return ``False`` for a listed warning, ``True`` for anything else."""
        return not is_uninformative(record.getMessage())


def install() -> None:
    """Filter the listed warnings from this process's log and ``warnings`` output.

    Idempotent. Kedro's logging configuration leaves the ``py.warnings`` logger (and so
    this filter) alone, as long as it does not configure that logger itself.
    """
    captured = logging.getLogger("py.warnings")
    if not any(isinstance(existing, UninformativeWarnings) for existing in captured.filters):
        captured.addFilter(UninformativeWarnings())
    for pattern in UNINFORMATIVE_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{re.escape(pattern)}")
