"""The project's Kedro CLI hook (entry point ``kedro.cli_hooks``).

Kedro loads CLI hooks before the commands of its plugins (kedro-mlflow, kedro-viz), whose
import is where some third-party warnings are printed; importing this module attaches
the project's filter of uninformative warnings first
(:mod:`neural_eq_morphing.warning_filters`).
"""

from __future__ import annotations

from typing import Any

from kedro.framework.cli.hooks import cli_hook_impl

from neural_eq_morphing.warning_filters import install

install()


class QuietWarnings:
    """Keep the filter of uninformative warnings in place for every ``kedro`` command."""

    @cli_hook_impl
    def before_command_run(self, project_metadata: Any, command_args: list[str]) -> None:
        """Attach the filter again, in case logging was reconfigured since import."""
        install()


cli_hooks = QuietWarnings()
