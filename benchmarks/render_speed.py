"""Speed and memory of applying a preset to an audio file (``eq.audio.render_file``).

Writes stereo 44.1 kHz 16-bit WAV files of white noise (10 minutes by default, and a
tenth of that), then renders each in a fresh process, with and without loudness matching,
and reports how many times faster than real time it ran and the process's peak RSS. Peak
memory should not grow with the file's length (the filters run block by block); the
issue's budget is at least 100x real time for the 10-minute file.

    python benchmarks/render_speed.py                    # 10 and 1 minute, 3 runs each
    python benchmarks/render_speed.py --minutes 2 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

RATE = 44_100
#: A preset with all five bands active (within the plug-in limits).
SETTING = [4.0, 120.0, -3.0, 400.0, 1.2, 2.0, 1500.0, 0.8, -2.0, 4000.0, 2.0, 3.0, 9000.0]
BUDGET_TIMES_REAL_TIME = 100.0

_CHILD = """
import json, resource, sys, time
import numpy as np
from neural_eq_morphing.eq.audio import render_file
source, target, match = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
setting = np.array(json.loads(sys.argv[4]))
start = time.perf_counter()
report = render_file(source, target, setting, match_loudness=match, overwrite=True)
seconds = time.perf_counter() - start
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "audio_s": report.seconds, "peak_mib": peak_mib}))
"""


def write_noise(path: Path, minutes: float, block_s: float = 10.0) -> None:
    """White noise at -20 dBFS RMS, written block by block (the writer is bounded too)."""
    rng = np.random.default_rng(0)
    frames = int(minutes * 60 * RATE)
    with soundfile.SoundFile(path, "w", RATE, 2, subtype="PCM_16") as sink:
        for start in range(0, frames, int(block_s * RATE)):
            count = min(int(block_s * RATE), frames - start)
            sink.write(0.1 * rng.standard_normal((count, 2)))


def render_once(source: Path, target: Path, match: bool) -> dict[str, float]:
    """Render in a fresh Python process; its wall seconds, audio seconds and peak RSS."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(source),
            str(target),
            "1" if match else "0",
            json.dumps(SETTING),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark and print one line per case, then a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for minutes in (args.minutes, args.minutes / 10):
            source = Path(folder) / f"noise_{minutes:g}min.wav"
            write_noise(source, minutes)
            for match in (False, True):
                runs = [
                    render_once(source, Path(folder) / "out.wav", match) for _ in range(args.repeat)
                ]
                seconds = statistics.median(r["seconds"] for r in runs)
                speed = runs[0]["audio_s"] / seconds
                peak = max(r["peak_mib"] for r in runs)
                name = f"{minutes:g} min, {'loudness-matched' if match else 'plain'}"
                results[name] = {"seconds": seconds, "times_real_time": speed, "peak_mib": peak}
                print(
                    f"{name:32s} {seconds:7.2f} s  {speed:7.0f}x real time  peak {peak:6.0f} MiB",
                    flush=True,
                )
    longest = f"{args.minutes:g} min, loudness-matched"
    verdict = results[longest]["times_real_time"] >= BUDGET_TIMES_REAL_TIME
    print(
        f"budget: {BUDGET_TIMES_REAL_TIME:g}x real time for {longest}: "
        f"{'met' if verdict else 'NOT met'}"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
