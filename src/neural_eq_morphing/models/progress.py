"""Progress reporting for training: a callback hook and a default console reporter.

:func:`~neural_eq_morphing.models.training.train` calls its ``progress`` callback once per
epoch with an :class:`EpochReport`. :class:`ConsoleProgress` is the default reporter: a
progress bar with the current losses when stderr is a terminal, and plain ``logging``
lines every few epochs otherwise (log files, CI, Kedro runs).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """What one finished epoch looked like, for all ensemble members.

    Attributes:
        epoch: 1-based epoch number.
        epochs: Total number of epochs of the run.
        seeds: Seeds of the members, in member order.
        train_loss: Mean training loss of the epoch, per member.
        val_loss: Validation loss after the epoch, per member.
        val_reconstruction: Validation reconstruction loss, per member.
        val_contrastive: Validation contrastive loss, per member.
        contrastive_weight: Contrastive weight used in this epoch.
        learning_rates: Learning rate used in this epoch, per member.
        elapsed_s: Seconds since training started.
    """

    epoch: int
    epochs: int
    seeds: tuple[int, ...]
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    val_reconstruction: tuple[float, ...]
    val_contrastive: tuple[float, ...]
    contrastive_weight: float
    learning_rates: tuple[float, ...]
    elapsed_s: float


ProgressCallback = Callable[[EpochReport], None]


def _mean(values: tuple[float, ...]) -> float:
    return sum(values) / len(values)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


class ConsoleProgress:
    """Default progress reporter: a terminal bar, or log lines when not on a terminal.

    Losses shown are means over the ensemble members.

    Args:
        description: Text in front of the bar and the log lines (e.g. ``"log2 seeds 0-4"``).
        log_every: Without a terminal, log every this many epochs (and the last one).
        stream: Where the bar goes; defaults to ``sys.stderr``.
        bar: Force the bar on or off; by default on when ``stream`` is a terminal.
        width: Width of the bar in characters.
    """

    def __init__(
        self,
        description: str = "training",
        *,
        log_every: int = 10,
        stream: TextIO | None = None,
        bar: bool | None = None,
        width: int = 24,
    ) -> None:
        self.description = description
        self.log_every = max(1, int(log_every))
        self.stream = stream if stream is not None else sys.stderr
        if bar is None:
            isatty = getattr(self.stream, "isatty", None)
            bar = bool(isatty and isatty())
        self.bar = bar
        self.width = width
        self._last_draw = 0.0

    def __call__(self, report: EpochReport) -> None:
        """Show one epoch's report."""
        if self.bar:
            self._draw(report)
        elif report.epoch % self.log_every == 0 or report.epoch == report.epochs:
            logger.info(
                "%s: epoch %d/%d train %.4f val %.4f (recon %.4f, contrastive %.4f) "
                "w %.3f lr %.2e, %.1f s",
                self.description,
                report.epoch,
                report.epochs,
                _mean(report.train_loss),
                _mean(report.val_loss),
                _mean(report.val_reconstruction),
                _mean(report.val_contrastive),
                report.contrastive_weight,
                _mean(report.learning_rates),
                report.elapsed_s,
            )

    def _draw(self, report: EpochReport) -> None:
        now = time.monotonic()
        last = report.epoch == report.epochs
        if not last and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        filled = round(self.width * report.epoch / report.epochs)
        rate = report.epoch / report.elapsed_s if report.elapsed_s > 0 else 0.0
        remaining = (report.epochs - report.epoch) / rate if rate > 0 else 0.0
        line = (
            f"\r{self.description} |{'█' * filled}{' ' * (self.width - filled)}| "
            f"{report.epoch}/{report.epochs} [{_clock(report.elapsed_s)}<{_clock(remaining)}, "
            f"{rate:.1f} ep/s] train {_mean(report.train_loss):.4f} "
            f"val {_mean(report.val_loss):.4f} lr {_mean(report.learning_rates):.1e}"
        )
        self.stream.write(line + ("\n" if last else ""))
        self.stream.flush()


def default_progress(description: str = "training", log_every: int = 10) -> ConsoleProgress:
    """Return the default reporter: a bar on a terminal, log lines otherwise."""
    return ConsoleProgress(description, log_every=log_every)
