"""Wall time and peak memory of whole ``kedro run`` commands (docs/design.md section 9).

Runs each command in a fresh process from the project root, the way a user would, and
prints the wall time (start-up included) and the peak RSS of the process tree. Then, back
to back on the same machine, the reference: one plain eager Log 2 training (the ``eager``
case of ``benchmarks/train_speed.py``, ``--eager-epochs`` epochs scaled to 150), and the
command's ratio to it against its budget (a ratio: absolute times differ by machine).

    python benchmarks/pipeline_speed.py                      # kedro run, 3 times
    python benchmarks/pipeline_speed.py --repeat 1 --pipeline compare
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Budgets as ratios to one eager 150-epoch Log 2 training (docs/design.md section 9).
BUDGET_RATIO = {"__default__": 0.5, "log2": 0.5, "compare": 10.0}
REFERENCE_EPOCHS = 150


def eager_reference_s(epochs: int, repeat: int) -> float:
    """Seconds of one eager Log 2 training of :data:`REFERENCE_EPOCHS` epochs.

    Measured with ``epochs`` epochs of train_speed's ``eager`` case, ``repeat`` runs in
    fresh processes (this machine's eager epoch varies by up to 2x from run to run); the
    median of the runs' median epochs, scaled.
    """
    script = Path(__file__).resolve().parent / "train_speed.py"
    command = [sys.executable, str(script), "--cases", "eager", "--json"]
    result = subprocess.run(
        [*command, "--eager-epochs", str(epochs), "--repeat", str(repeat)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"the eager reference failed:\n{result.stderr[-3000:]}")
    runs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    epoch_ms = statistics.median(run["median_ms_per_epoch"] for run in runs)
    return epoch_ms * REFERENCE_EPOCHS / 1000.0


def run_once(command: list[str]) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, peak RSS in MiB of the largest child)."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak_kib / 1024


def main() -> None:
    """Time the requested pipeline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="__default__")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--params", default=None, help="passed to kedro run --params")
    parser.add_argument(
        "--eager-epochs", type=int, default=30, help="epochs of each eager reference run"
    )
    parser.add_argument(
        "--eager-repeat", type=int, default=3, help="eager reference runs (median taken)"
    )
    args = parser.parse_args()

    kedro = shutil.which("kedro", path=str(Path(sys.executable).parent)) or "kedro"
    command = [kedro, "run"]
    if args.pipeline != "__default__":
        command += ["--pipelines", args.pipeline]
    if args.params:
        command += ["--params", args.params]
    os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")

    walls = []
    for index in range(args.repeat):
        wall, peak = run_once(command)
        walls.append(wall)
        print(f"run {index + 1}: {wall:.1f} s wall, peak RSS so far {peak:.0f} MiB")
    reference = eager_reference_s(args.eager_epochs, args.eager_repeat)
    median = statistics.median(walls)
    ratio = median / reference
    budget = BUDGET_RATIO.get(args.pipeline)
    verdict = (
        "" if budget is None else f", budget {budget:g}x: {'met' if ratio <= budget else 'MISSED'}"
    )
    print(
        f"{' '.join(command[1:])}: median {median:.1f} s, "
        f"min {min(walls):.1f} s, max {max(walls):.1f} s over {len(walls)} run(s)"
    )
    print(
        f"eager Log 2 reference, {REFERENCE_EPOCHS} epochs (measured now: median of "
        f"{args.eager_repeat} runs of {args.eager_epochs} epochs, scaled): {reference:.1f} s; "
        f"ratio {ratio:.2f}x{verdict}"
    )


if __name__ == "__main__":
    main()
