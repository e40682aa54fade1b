"""Wall time and peak memory of whole ``kedro run`` commands (docs/design.md section 9).

Runs each command in a fresh process from the project root, the way a user would, and
prints the wall time (start-up included) and the peak RSS of the process tree.

    python benchmarks/pipeline_speed.py                      # kedro run, 3 times
    python benchmarks/pipeline_speed.py --repeat 1 --pipeline log1
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = {"__default__": 30.0, "log2": 30.0, "compare": 120.0}


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
    budget = BUDGET_S.get(args.pipeline)
    verdict = (
        ""
        if budget is None
        else f" (budget {budget:.0f} s: {'met' if max(walls) <= budget else 'MISSED'})"
    )
    print(
        f"{' '.join(command[1:])}: median {statistics.median(walls):.1f} s, "
        f"min {min(walls):.1f} s, max {max(walls):.1f} s over {len(walls)} run(s){verdict}"
    )


if __name__ == "__main__":
    main()
