"""Training speed of the semantic EQ models on the SAFE-DB rows (DESIGN.md section 9).

Runs without Kedro: builds the 1,283 filtered rows itself from the raw SAFE-DB file
(``../shared/safe-db/`` or ``data/01_raw/``; synthetic rows of the same size when neither
exists), normalises them with the project's normalisers, and uses all rows as both the
training and the validation set. Only fields 1 (descriptor) and 5-17 (parameters) of the
file are read; field 2 (an IP address) is never touched.

Cases (each runs in a fresh subprocess, so its peak RSS and timings are its own):

* ``log2``: one Log 2 model, 150 epochs, batch 64;
* ``log1``: one Log 1 model, 100 epochs, batch 32;
* ``ensemble``: a Log 2 ensemble (``--seeds``, default 5) trained together;
* ``ensemble-log1``: the same for Log 1;
* ``eager``: a plain eager ``nn.Module`` + autograd + ``torch.optim.Adam`` loop for Log 2
  (the reference implementation style), over ``--eager-epochs`` epochs;
* ``compiled``: that eager step under ``torch.compile``, with its compile time.

Usage::

    .venv/bin/python benchmarks/train_speed.py
    .venv/bin/python benchmarks/train_speed.py --cases ensemble --workers 1 --repeat 3
    .venv/bin/python benchmarks/train_speed.py --cases eager compiled
    .venv/bin/python benchmarks/train_speed.py --profile
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

from neural_eq_morphing.eq.normalisers import MinMaxNormaliser, ZScoreNormaliser
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, UPPER_LIMITS
from neural_eq_morphing.models import (
    SemanticEQModel,
    TrainingConfig,
    reconstruction_loss,
    supervised_contrastive_loss,
    train,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAFE_DB_NAME = "SAFEEqualiserUserData.csv"
CANDIDATES = (
    PROJECT_ROOT.parent / "shared" / "safe-db" / SAFE_DB_NAME,
    PROJECT_ROOT / "data" / "01_raw" / SAFE_DB_NAME,
)
MIN_EXAMPLES = 5
CASES = ("log2", "log1", "ensemble", "ensemble-log1", "eager", "compiled")
DEFAULT_CASES = ("log2", "log1", "ensemble")


def load_rows(path: Path | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Return parameters ``(n, 13)`` in plug-in units, integer term ids and a source note.

    Keeps descriptors (lower-cased, stripped) with at least ``MIN_EXAMPLES`` rows.
    """
    if path is None:
        return synthetic_rows()
    descriptors: list[str] = []
    params: list[list[float]] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        for fields in csv.reader(handle):
            if len(fields) != 25:
                continue
            try:
                values = [float(v) for v in fields[5:18]]
            except ValueError:
                continue
            descriptors.append(fields[1].strip().lower())
            params.append(values)
    counts = Counter(descriptors)
    terms = sorted(t for t, c in counts.items() if c >= MIN_EXAMPLES)
    term_id = {t: i for i, t in enumerate(terms)}
    keep = [i for i, d in enumerate(descriptors) if d in term_id]
    labels = np.array([term_id[descriptors[i]] for i in keep], dtype=np.int64)
    return np.array([params[i] for i in keep]), labels, f"{path.name}: {len(terms)} terms"


def synthetic_rows(n: int = 1283, terms: int = 14) -> tuple[np.ndarray, np.ndarray, str]:
    """Random in-range settings of the real data's size, for machines without the file."""
    rng = np.random.default_rng(0)
    unit = rng.random((n, len(LOWER_LIMITS)))
    values = LOWER_LIMITS + unit * (UPPER_LIMITS - LOWER_LIMITS)
    return values, rng.integers(0, terms, n), f"synthetic: {terms} terms"


def find_file(explicit: str | None) -> Path | None:
    """The raw file given on the command line, or the first candidate that exists."""
    if explicit:
        return Path(explicit)
    return next((p for p in CANDIDATES if p.is_file()), None)


def prepare(variant: str, path: Path | None) -> tuple[np.ndarray, np.ndarray, Any, Any, str]:
    """Normalised features, labels, z-score mean/std (Log 1) and a source note."""
    values, labels, note = load_rows(path)
    if variant == "log2":
        return MinMaxNormaliser.from_plugin_limits().transform(values), labels, None, None, note
    normaliser = ZScoreNormaliser.fit(values)
    return normaliser.transform(values), labels, normaliser.mean, normaliser.std, note


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in this process and return its figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    variant = "log1" if case in ("log1", "ensemble-log1") else "log2"
    features, labels, mean, std, note = prepare(variant, find_file(args.data))
    overrides: dict[str, Any] = {"workers": args.workers}
    if args.epochs:
        overrides["epochs"] = args.epochs
    config = TrainingConfig.for_variant(variant, **overrides)
    seeds = list(range(args.seeds)) if case.startswith("ensemble") else [0]
    result: dict[str, Any] = {
        "case": case,
        "rows": len(labels),
        "data": note,
        "threads": torch.get_num_threads(),
    }
    if case in ("eager", "compiled"):
        result.update(
            eager_loop(
                config, features, labels, compiled=case == "compiled", epochs=args.eager_epochs
            )
        )
    else:
        started = time.perf_counter()
        run = train(
            config,
            features,
            labels,
            features,
            labels,
            seeds=seeds,
            zscore_mean=mean,
            zscore_std=std,
        )
        total = time.perf_counter() - started
        last = run.history[run.history["epoch"] == config.epochs]
        result.update(
            members=len(seeds),
            epochs=config.epochs,
            batch_size=config.batch_size,
            ms_per_epoch=run.timing.ms_per_epoch,
            ms_per_model_epoch=run.timing.ms_per_model_epoch,
            median_ms_per_epoch=run.timing.median_ms_per_epoch,
            slowest_epoch_ms=1000.0 * max(run.timing.epoch_s),
            train_s=run.timing.train_s,
            total_s=total,
            final_val_loss=float(last["val_loss"].mean()),
        )
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def eager_loop(
    config: TrainingConfig, features: np.ndarray, labels: np.ndarray, *, compiled: bool, epochs: int
) -> dict[str, Any]:
    """Plain eager nn.Module training (autograd + torch.optim.Adam) for comparison."""
    torch.manual_seed(0)
    model = SemanticEQModel(config.variant).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels)
    weight = config.contrastive_weight_start

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        _, projection, output = model(xb)
        loss = reconstruction_loss(output, xb, config.variant)
        loss = loss + weight * supervised_contrastive_loss(projection, yb, config.temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss.detach()

    if compiled:
        step = torch.compile(step)
    n, bs = len(x), config.batch_size
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        perm = torch.randperm(n)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            step(x[idx], y[idx])
        model.eval()
        with torch.no_grad():
            for start in range(0, n, bs):
                _, projection, output = model(x[start : start + bs])
                reconstruction_loss(output, x[start : start + bs], config.variant)
                supervised_contrastive_loss(projection, y[start : start + bs], config.temperature)
        model.train()
        times.append(time.perf_counter() - started)
    steady = times[2:] if len(times) > 3 else times
    return {
        "members": 1,
        "epochs": epochs,
        "batch_size": bs,
        "ms_per_epoch": 1000.0 * float(np.median(steady)),
        "ms_per_model_epoch": 1000.0 * float(np.median(steady)),
        "first_epoch_s": times[0],
    }


def profile(args: argparse.Namespace) -> None:
    """Print torch.profiler's top ops over a few Log 2 epochs of the trainer.

    Profiles one model, or the ensemble when ``--cases`` names only ensemble cases. The
    profiler sees the calling thread only, so the ensemble runs as one group here
    (``workers=1``) unless ``--workers`` says otherwise.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    features, labels, _, _, _ = prepare("log2", find_file(args.data))
    ensemble = all(case.startswith("ensemble") for case in args.cases)
    config = TrainingConfig.for_variant(
        "log2", epochs=args.profile_epochs, workers=args.workers or 1
    )
    seeds = list(range(args.seeds)) if ensemble else [0]
    train(config, features, labels, features, labels, seeds=seeds)  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        train(config, features, labels, features, labels, seeds=seeds)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))


def describe(r: dict[str, Any]) -> str:
    """One human-readable line per run."""
    text = (
        f"{r['case']:13s} {r['members']} model(s), {r['epochs']} epochs, batch {r['batch_size']}, "
        f"{r['threads']} thread(s): {r['ms_per_epoch']:.1f} ms/epoch, "
        f"{r['ms_per_model_epoch']:.1f} ms/model-epoch"
    )
    if "train_s" in r:
        text += (
            f" (median epoch {r['median_ms_per_epoch']:.1f} ms, slowest {r['slowest_epoch_ms']:.0f}"
            f" ms), train {r['train_s']:.2f} s, total {r['total_s']:.2f} s, "
            f"final val loss {r['final_val_loss']:.4f}"
        )
    if "first_epoch_s" in r:
        text += f", first epoch {r['first_epoch_s']:.1f} s"
    return text + f", peak RSS {r['peak_rss_mb']:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=CASES)
    parser.add_argument("--seeds", type=int, default=5, help="members of the ensemble cases")
    parser.add_argument("--epochs", type=int, default=None, help="override the variants' epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--workers", type=int, default=None, help="TrainingConfig.workers")
    parser.add_argument("--eager-epochs", type=int, default=12, help="epochs of eager/compiled")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case")
    parser.add_argument("--data", default=None, help="path of SAFEEqualiserUserData.csv")
    parser.add_argument("--json", action="store_true", help="print one JSON line per run")
    parser.add_argument("--profile", action="store_true", help="profile a few epochs instead")
    parser.add_argument("--profile-epochs", type=int, default=5)
    parser.add_argument("--profile-rows", type=int, default=30)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.case:  # child process: one case, one JSON line
        print(json.dumps(run_case(args.case, args)))
        return 0
    if args.profile:
        profile(args)
        return 0
    _, rows, note = load_rows(find_file(args.data))
    print(f"data: {note}, {len(rows)} rows (all used for training and validation)")
    forwarded = []
    for name in ("seeds", "epochs", "threads", "workers", "eager_epochs", "data"):
        value = getattr(args, name)
        if value is not None:
            forwarded += [f"--{name.replace('_', '-')}", str(value)]
    for case in args.cases:
        for _ in range(args.repeat):
            child = subprocess.run(
                [sys.executable, __file__, *forwarded, "--case", case],
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                print(f"{case}: failed\n{child.stderr}", file=sys.stderr)
                return child.returncode
            result = json.loads(child.stdout.strip().splitlines()[-1])
            print(json.dumps(result) if args.json else describe(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
