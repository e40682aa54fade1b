"""Training speed of the semantic EQ models on the SAFE-DB rows (docs/design.md section 9).

Runs without Kedro: builds the 1,283 filtered rows itself from the raw SAFE-DB file
(``../shared/safe-db/`` or ``data/01_raw/``; synthetic rows of the same size when neither
exists), normalises them as the design says, and uses all rows as both the training and
the validation set. Only fields 1 (descriptor) and 5-17 (parameters) of the file are
read; field 2 (an IP address) is never touched. Every hyper-parameter comes from the
design's ``training`` block in ``conf/base/parameters_designs.yml`` (``--epochs`` may
shorten the run).

Cases (each runs in a fresh subprocess, so its peak RSS, timings and process-wide
settings are its own; with ``--repeat`` the cases are interleaved, ABCABC…):

* ``eager``: the reference, a plain ``nn.Module`` (``eager_reference.py``) + autograd +
  ``torch.optim.Adam`` loop on one Log 2 model, over ``--eager-epochs`` epochs;
* ``log2``: one Log 2 model through :func:`~neural_eq_morphing.models.train` (the
  batched engine, gradients by autograd);
* ``ensemble``: a Log 2 ensemble (``--seeds``, default 5) through ``train``;
* ``func``: the conventional batched ensemble, ``torch.func.stack_module_state`` +
  ``functional_call`` + ``vmap(grad(...))`` over plain-module members with
  ``torch.optim.Adam`` over the stacked parameters, for the same Log 2 ensemble, over
  ``--eager-epochs`` epochs;
* ``log1`` / ``ensemble-log1``: the engine's cases for Log 1;
* ``compiled``: the eager step under ``torch.compile``, with its compile time;
* ``folds``: one Log 2 ensemble of ``--fold-members`` (default 18) members with rows of
  their own through :func:`~neural_eq_morphing.models.train_members`, drawn like
  cross-validation folds: member ``k`` has seed ``k mod --seeds``, a random subset of
  600-1000 rows as training rows and the other rows as validation rows. Its members see
  fewer training rows than ``ensemble``'s (which trains and validates on all rows), so
  besides ms per model-epoch it prints the rows per member and the figure scaled to all
  rows by the mean training row count;
* ``designs``: the ``folds`` case once for every design of ``parameters_designs.yml``
  (shown as ``design:<name>``), with ``--design-members`` members (default 10: compare's
  nine folds and a reproduction member), each design with its own epochs, batch size,
  head, loss and latent.

The figure is the median epoch (training and validation) per model, in ms per
model-epoch, with its ratio against ``eager`` when that case ran.

Usage::

    .venv/bin/python benchmarks/train_speed.py                       # eager log2 ensemble func
    .venv/bin/python benchmarks/train_speed.py --repeat 3
    .venv/bin/python benchmarks/train_speed.py --cases ensemble --workers 1 --threads 2
    .venv/bin/python benchmarks/train_speed.py --cases log2 ensemble --keep-freed-memory
    .venv/bin/python benchmarks/train_speed.py --cases eager ensemble folds --epochs 10
    .venv/bin/python benchmarks/train_speed.py --cases eager designs --epochs 30
    .venv/bin/python benchmarks/train_speed.py --profile
    .venv/bin/python benchmarks/train_speed.py --against 8398ce6 --epochs 10 --repeat 2

``--against REV`` runs the ``folds`` case at each of ``--sizes`` members (default 1, 9, 19,
55) with the engine of commit ``REV`` (its ``src/``, extracted with ``git archive``) and
with this tree's, interleaved, and prints new / old per size.
"""

from __future__ import annotations

import argparse
import copy
import csv
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.func import functional_call, grad, stack_module_state, vmap
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

from neural_eq_morphing.eq.normalisers import ZScoreNormaliser, build_normaliser
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, UPPER_LIMITS

# Only names that the engine of earlier commits has too (``--against`` runs this file
# against their source tree); the eager and func cases import theirs where they run.
from neural_eq_morphing.models import (
    MemberData,
    TrainingConfig,
    TrainingResult,
    train,
    train_members,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DESIGNS_FILE = PROJECT_ROOT / "conf" / "base" / "parameters_designs.yml"
#: The environment variable that hands the resolved designs to a case's process.
DESIGNS_ENV = "NEM_BENCHMARK_DESIGNS"
SAFE_DB_NAME = "SAFEEqualiserUserData.csv"
CANDIDATES = (
    PROJECT_ROOT.parent / "shared" / "safe-db" / SAFE_DB_NAME,
    PROJECT_ROOT / "data" / "01_raw" / SAFE_DB_NAME,
)
MIN_EXAMPLES = 5
CASES = (
    "eager",
    "log2",
    "ensemble",
    "func",
    "log1",
    "ensemble-log1",
    "compiled",
    "folds",
    "designs",
)
DEFAULT_CASES = ("eager", "log2", "ensemble", "func")
#: The design each case trains.
DESIGN_OF_CASE = {"log1": "log1", "ensemble-log1": "log1"}
#: ``--against``: the cases ``old:<N>`` (the engine of the given commit) and ``new:<N>``
#: (this tree's), each the ``folds`` case with ``N`` members.
ENGINE_PREFIXES = ("old:", "new:")
#: Training rows of a ``folds`` member: drawn uniformly from this range (inclusive).
FOLD_TRAIN_ROWS = (600, 1000)


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


def designs() -> dict[str, Any]:
    """The ``designs`` block of ``conf/base/parameters_designs.yml``, ``extends`` resolved.

    Resolved by this tree's code, and handed to the cases' processes in
    :data:`DESIGNS_ENV` (an ``--against`` case runs an older tree, which may not resolve).
    """
    handed = os.environ.get(DESIGNS_ENV)
    if handed:
        return json.loads(handed)
    from neural_eq_morphing.pipelines.designs import resolve_extends  # noqa: PLC0415

    raw = yaml.safe_load(DESIGNS_FILE.read_text(encoding="utf-8"))["designs"]
    return resolve_extends(raw)


def design(name: str) -> dict[str, Any]:
    """One design's block of ``conf/base/parameters_designs.yml``."""
    return designs()[name]


def expand(cases: list[str]) -> list[str]:
    """The cases to run: ``designs`` becomes one ``design:<name>`` per design."""
    out: list[str] = []
    for case in cases:
        out += [f"design:{name}" for name in designs()] if case == "designs" else [case]
    return out


def design_config(name: str, **overrides: Any) -> TrainingConfig:
    """The design's training configuration (its block less ``seed``), with overrides."""
    values = dict(design(name)["training"])
    values.pop("seed", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainingConfig.from_dict(values)


def prepare(name: str, path: Path | None) -> tuple[np.ndarray, np.ndarray, Any, Any, str]:
    """Normalised features, labels, z-score mean/std (if the design's is one), a note."""
    values, labels, note = load_rows(path)
    normaliser = build_normaliser(design(name)["feature_normaliser"], values)
    if isinstance(normaliser, ZScoreNormaliser):
        return normaliser.transform(values), labels, normaliser.mean, normaliser.std, note
    return normaliser.transform(values), labels, None, None, note


def keep_freed_memory() -> bool:
    """Raise glibc's mmap (32 MiB) and trim (512 MiB) thresholds for this process.

    With glibc's defaults, large freed blocks go back to the OS and the next step
    page-faults them in again. Returns whether the settings took effect.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    m_trim_threshold, m_mmap_threshold = -1, -3
    return (
        mallopt(m_mmap_threshold, 32 * 1024 * 1024) == 1
        and mallopt(m_trim_threshold, 512 * 1024 * 1024) == 1
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in this process and return its figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc_tuned = keep_freed_memory() if args.keep_freed_memory else False
    by_design = case.startswith("design:")
    name = case.split(":", 1)[1] if by_design else DESIGN_OF_CASE.get(case, "log2")
    features, labels, mean, std, note = prepare(name, find_file(args.data))
    config = design_config(name, epochs=args.epochs, workers=args.workers)
    seeds = list(range(args.seeds)) if case in ("ensemble", "ensemble-log1", "func") else [0]
    result: dict[str, Any] = {
        "case": case,
        "design": name,
        "rows": len(labels),
        "data": note,
        "threads": torch.get_num_threads(),
        "malloc_tuned": malloc_tuned,
    }
    if case in ("eager", "compiled"):
        result.update(
            eager_loop(
                config, features, labels, compiled=case == "compiled", epochs=args.eager_epochs
            )
        )
    elif case == "func":
        result.update(func_loop(config, features, labels, seeds, epochs=args.eager_epochs))
    elif case == "folds" or by_design or case.startswith(ENGINE_PREFIXES):
        count = args.design_members if by_design else args.fold_members
        if case.startswith(ENGINE_PREFIXES):
            count = int(case.split(":", 1)[1])
        members = fold_members(features, labels, mean, std, count, args.seeds)
        started = time.perf_counter()
        run = train_members(config, members)
        result.update(train_figures(config, run, time.perf_counter() - started))
        train_rows = [len(m.train_labels) for m in members]
        mean_rows = float(np.mean(train_rows))
        result.update(
            train_rows_per_member=train_rows,
            val_rows_per_member=[len(m.val_labels) for m in members],
            mean_train_rows=mean_rows,
            ms_per_model_epoch_at_all_rows=result["ms_per_model_epoch"] * len(labels) / mean_rows,
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
        result.update(train_figures(config, run, time.perf_counter() - started))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def train_figures(config: TrainingConfig, run: TrainingResult, total_s: float) -> dict[str, Any]:
    """The figures of a run of the engine (``train`` or ``train_members``)."""
    members = len(run.models)
    last = run.history[run.history["epoch"] == config.epochs]
    return {
        "members": members,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "median_ms_per_epoch": run.timing.median_ms_per_epoch,
        "ms_per_model_epoch": run.timing.median_ms_per_epoch / members,
        "mean_ms_per_epoch": run.timing.ms_per_epoch,
        "slowest_epoch_ms": 1000.0 * max(run.timing.epoch_s),
        "train_s": run.timing.train_s,
        "total_s": total_s,
        "final_val_loss": float(last["val_loss"].mean()),
    }


def fold_members(
    features: np.ndarray,
    labels: np.ndarray,
    mean: Any,
    std: Any,
    count: int,
    seeds: int,
) -> list[MemberData]:
    """``count`` members drawn like cross-validation folds (the ``folds`` case).

    Member ``k`` has seed ``k mod seeds``, a random subset of ``FOLD_TRAIN_ROWS`` rows as
    its training rows and the other rows as its validation rows (a fixed draw).
    """
    rng = np.random.default_rng(0)
    low, high = FOLD_TRAIN_ROWS
    members = []
    for k in range(count):
        n = int(rng.integers(low, min(high, len(labels) - 1) + 1))
        order = rng.permutation(len(labels))
        train_rows, val_rows = np.sort(order[:n]), np.sort(order[n:])
        members.append(
            MemberData(
                seed=k % seeds,
                train_features=features[train_rows],
                train_labels=labels[train_rows],
                val_features=features[val_rows],
                val_labels=labels[val_rows],
                zscore_mean=mean,
                zscore_std=std,
            )
        )
    return members


def plain_model(config: TrainingConfig) -> torch.nn.Module:
    """The eager reference's plain ``nn.Module`` of the design (torch's global RNG init)."""
    from eager_reference import PlainSemanticEQ  # noqa: PLC0415 (see eager_loop)

    return PlainSemanticEQ(
        config.decoder_head,
        config.hidden_dims,
        config.latent_dim,
        config.projection_dim,
        config.dropout,
    )


def _steady_median_ms(times: list[float]) -> float:
    """Median epoch in ms, leaving out the first two (warm-up) when there are enough."""
    steady = times[2:] if len(times) > 3 else times
    return 1000.0 * float(np.median(steady))


def eager_loop(
    config: TrainingConfig, features: np.ndarray, labels: np.ndarray, *, compiled: bool, epochs: int
) -> dict[str, Any]:
    """Plain eager nn.Module training (autograd + torch.optim.Adam) of one model."""
    # Imported here: ``--against`` runs the other cases with an older tree that lacks them.
    from neural_eq_morphing.models.losses import (  # noqa: PLC0415
        reconstruction_per_row,
        supervised_contrastive_loss,
    )

    torch.manual_seed(0)
    model = plain_model(config).train()
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, betas=config.betas, eps=config.eps
    )
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels)
    weight = config.contrastive_weight_start

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        _, projection, output = model(xb)
        loss = reconstruction_per_row(output, xb).mean()
        loss = loss + weight * supervised_contrastive_loss(projection, yb, config.temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return loss.detach()

    if compiled:
        step = torch.compile(step)
    generator = torch.Generator().manual_seed(0)
    n, bs = len(x), config.batch_size
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            step(x[idx], y[idx])
        model.eval()
        with torch.no_grad():
            for start in range(0, n, bs):
                _, projection, output = model(x[start : start + bs])
                reconstruction_per_row(output, x[start : start + bs]).mean()
                supervised_contrastive_loss(projection, y[start : start + bs], config.temperature)
        model.train()
        times.append(time.perf_counter() - started)
    return {
        "members": 1,
        "epochs": epochs,
        "batch_size": bs,
        "median_ms_per_epoch": _steady_median_ms(times),
        "ms_per_model_epoch": _steady_median_ms(times),
        "first_epoch_s": times[0],
    }


def func_loop(
    config: TrainingConfig,
    features: np.ndarray,
    labels: np.ndarray,
    seeds: list[int],
    *,
    epochs: int,
) -> dict[str, Any]:
    """The conventional batched ensemble: torch.func over stacked SemanticEQModel members.

    ``stack_module_state`` stacks the members' parameters (``(M, ...)`` leaves),
    ``vmap(grad(loss))`` of a ``functional_call`` on a stateless copy gives every
    member's gradient on its own batch (``randomness="different"``: each member its own
    dropout masks), and one ``torch.optim.Adam`` steps the stacked parameters.
    """
    # Imported here: ``--against`` runs the other cases with an older tree that lacks them.
    from neural_eq_morphing.models.losses import (  # noqa: PLC0415
        reconstruction_per_row,
        supervised_contrastive_loss,
    )

    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        members.append(plain_model(config))
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")
    optimiser = torch.optim.Adam(
        list(params.values()),
        lr=config.learning_rate,
        betas=config.betas,
        eps=config.eps,
        fused=config.fused_adam or None,
    )
    temperature = config.temperature
    weight = config.contrastive_weight_start

    def losses(p, b, xb, yb):
        _, projection, output = functional_call(base, (p, b), (xb,))
        recon = reconstruction_per_row(output, xb).mean()
        return recon, supervised_contrastive_loss(projection, yb, temperature)

    def total(p, b, xb, yb):
        recon, contrastive = losses(p, b, xb, yb)
        return recon + weight * contrastive

    gradients = vmap(grad(total), in_dims=(0, 0, 0, 0), randomness="different")
    validation = vmap(losses, in_dims=(0, 0, None, None))
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    n, bs = len(x), config.batch_size
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        base.train()
        perms = torch.stack([torch.randperm(n, generator=g) for g in generators])
        for start in range(0, n, bs):
            idx = perms[:, start : start + bs]
            grads = gradients(params, buffers, x[idx], y[idx])
            for name, value in params.items():
                value.grad = grads[name]
            optimiser.step()
        base.eval()
        with torch.no_grad():
            for start in range(0, n, bs):
                validation(params, buffers, x[start : start + bs], y[start : start + bs])
        times.append(time.perf_counter() - started)
    return {
        "members": len(seeds),
        "epochs": epochs,
        "batch_size": bs,
        "median_ms_per_epoch": _steady_median_ms(times),
        "ms_per_model_epoch": _steady_median_ms(times) / len(seeds),
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
    if args.keep_freed_memory:
        keep_freed_memory()
    features, labels, _, _, _ = prepare("log2", find_file(args.data))
    ensemble = all(case.startswith("ensemble") for case in args.cases)
    config = design_config("log2", epochs=args.profile_epochs, workers=args.workers or 1)
    seeds = list(range(args.seeds)) if ensemble else [0]
    train(config, features, labels, features, labels, seeds=seeds)  # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        train(config, features, labels, features, labels, seeds=seeds)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))


def describe(r: dict[str, Any]) -> str:
    """One human-readable line per run."""
    text = (
        f"{r['case']:13s} {r['members']} model(s), {r['epochs']} epochs, batch {r['batch_size']}, "
        f"{r['threads']} thread(s){', malloc tuned' if r['malloc_tuned'] else ''}: "
        f"median epoch {r['median_ms_per_epoch']:.1f} ms, "
        f"{r['ms_per_model_epoch']:.1f} ms/model-epoch"
    )
    if "train_s" in r:
        text += (
            f" (slowest epoch {r['slowest_epoch_ms']:.0f} ms), train {r['train_s']:.2f} s, "
            f"total {r['total_s']:.2f} s, final val loss {r['final_val_loss']:.4f}"
        )
    if "first_epoch_s" in r:
        text += f", first epoch {r['first_epoch_s']:.2f} s"
    if "train_rows_per_member" in r:
        text += (
            f"; training rows per member {r['train_rows_per_member']} (mean "
            f"{r['mean_train_rows']:.0f} of {r['rows']}; validation the rest), "
            f"{r['ms_per_model_epoch_at_all_rows']:.1f} ms/model-epoch scaled to {r['rows']} "
            "training rows"
        )
    return text + f", peak RSS {r['peak_rss_mb']:.0f} MiB"


def summary(results: dict[str, list[dict[str, Any]]]) -> str:
    """Median ms per model-epoch per case (over repeats) and the ratio against eager."""
    medians = {
        case: statistics.median(r["ms_per_model_epoch"] for r in runs)
        for case, runs in results.items()
    }
    eager = medians.get("eager")
    width = max(13, *(len(case) for case in medians))
    lines = ["", f"{'case':{width}s} {'runs':>4s} {'ms/model-epoch':>15s} {'eager / case':>13s}"]
    for case, value in medians.items():
        spread = [r["ms_per_model_epoch"] for r in results[case]]
        ratio = f"{eager / value:12.2f}x" if eager else f"{'-':>13s}"
        lines.append(
            f"{case:{width}s} {len(spread):4d} {value:15.1f} {ratio}"
            + (f"   (runs {min(spread):.1f}-{max(spread):.1f})" if len(spread) > 1 else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), choices=CASES)
    parser.add_argument("--seeds", type=int, default=5, help="members of the ensemble cases")
    parser.add_argument("--fold-members", type=int, default=18, help="members of the folds case")
    parser.add_argument(
        "--design-members", type=int, default=10, help="members of each design's run (designs)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the designs' epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--workers", type=int, default=None, help="TrainingConfig.workers")
    parser.add_argument(
        "--eager-epochs", type=int, default=12, help="epochs of eager/compiled/func"
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="raise glibc's malloc thresholds in each case's process (mallopt)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per case, interleaved")
    parser.add_argument("--data", default=None, help="path of SAFEEqualiserUserData.csv")
    parser.add_argument("--json", action="store_true", help="print one JSON line per run")
    parser.add_argument("--profile", action="store_true", help="profile a few epochs instead")
    parser.add_argument("--profile-epochs", type=int, default=5)
    parser.add_argument("--profile-rows", type=int, default=30)
    parser.add_argument(
        "--against",
        default=None,
        metavar="REV",
        help="compare this tree's engine with commit REV's (folds cases at --sizes members)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 9, 19, 55])
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
    names = ("seeds", "fold_members", "design_members", "epochs", "threads", "workers")
    for name in (*names, "eager_epochs", "data"):
        value = getattr(args, name)
        if value is not None:
            forwarded += [f"--{name.replace('_', '-')}", str(value)]
    if args.keep_freed_memory:
        forwarded.append("--keep-freed-memory")
    cases, envs = planned_cases(args)
    os.environ[DESIGNS_ENV] = json.dumps(designs())
    envs = {case: {**env, DESIGNS_ENV: os.environ[DESIGNS_ENV]} for case, env in envs.items()}
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _ in range(args.repeat):
        for case in cases:
            child = subprocess.run(
                [sys.executable, __file__, *forwarded, "--case", case],
                capture_output=True,
                text=True,
                check=False,
                env=envs.get(case),
            )
            if child.returncode != 0:
                print(f"{case}: failed\n{child.stderr}", file=sys.stderr)
                return child.returncode
            result = json.loads(child.stdout.strip().splitlines()[-1])
            results[case].append(result)
            print(json.dumps(result) if args.json else describe(result), flush=True)
    if not args.json:
        print(summary(results))
        if args.against:
            print(engine_table(results, args.sizes))
    return 0


def planned_cases(args: argparse.Namespace) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The cases to run, and the environment of those that run an older tree."""
    if not args.against:
        return expand(args.cases), {}
    old_src = source_tree(args.against)
    cases = [f"{side}:{n}" for n in args.sizes for side in ("old", "new")]
    print(f"old engine: commit {args.against} ({old_src}); new: this tree")
    return cases, {c: {**os.environ, "PYTHONPATH": old_src} for c in cases if c[:4] == "old:"}


def source_tree(revision: str) -> str:
    """Extract ``src/`` of ``revision`` into a temporary folder; return that ``src`` path."""
    target = Path(tempfile.mkdtemp(prefix="engine-"))
    archive = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "archive", revision, "src"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        sys.exit(f"git archive {revision} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return str(target / "src")


def engine_table(results: dict[str, list[dict[str, Any]]], sizes: list[int]) -> str:
    """ms per model-epoch of the old and new engines per member count, and new / old."""
    lines = ["", f"{'members':>7s} {'old ms/model-epoch':>19s} {'new':>8s} {'new / old':>10s}"]
    for n in sizes:
        old, new = (
            statistics.median(r["ms_per_model_epoch"] for r in results[f"{side}:{n}"])
            for side in ("old", "new")
        )
        lines.append(f"{n:7d} {old:19.2f} {new:8.2f} {new / old:9.3f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
