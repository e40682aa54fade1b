"""Training of the semantic EQ models: one seed, or several seeds as one batched ensemble.

:func:`train` trains one :class:`~neural_eq_morphing.models.modules.SemanticEQModel` per
seed. The seeds run together through
:class:`~neural_eq_morphing.models.batched.BatchedSemanticEQ` (split into a few groups
trained in parallel threads, see :attr:`TrainingConfig.workers`), yet every member gets
the training it would get alone: its own ``torch.Generator`` (seeded with its seed)
draws, in this order, its initial weights, then per epoch its batch permutation and per
step its dropout masks; it has its own Adam learning rate and its own ReduceLROnPlateau
state. Batched and solo runs of a seed differ only by float round-off (about 1e-8 after
an epoch). Same seeds, data, config and thread count ⇒ bit-identical results.

Per epoch: shuffled mini-batches (the last one may be smaller), loss
``reconstruction + w · contrastive`` with the epoch's contrastive weight ``w``, one Adam
step per batch; then the validation losses in eval mode (no dropout) over consecutive
batches of ``batch_size`` rows; then the LR schedule (Log 2) on the validation total loss.
Training losses are means over the epoch's batches, validation losses means over the
validation batches. Nothing touches the disk.

Process-wide effects while :func:`train` runs: ``torch.set_num_threads`` is changed (and
restored afterwards), and, with ``keep_freed_memory``, glibc's malloc thresholds are
raised for the rest of the process (:mod:`neural_eq_morphing.models.allocator`). The
global torch RNG is not touched.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from neural_eq_morphing.eq.parameters import N_PARAMETERS
from neural_eq_morphing.models.allocator import keep_freed_memory
from neural_eq_morphing.models.batched import BatchedSemanticEQ
from neural_eq_morphing.models.modules import (
    DEFAULT_HIDDEN_DIMS,
    SemanticEQModel,
    Variant,
    build_model,
    check_variant,
    initialise_parameters,
)
from neural_eq_morphing.models.optim import BatchedAdam, PlateauScheduler
from neural_eq_morphing.models.progress import EpochReport, ProgressCallback

#: Columns of :attr:`TrainingResult.history`, in order.
HISTORY_COLUMNS: tuple[str, ...] = (
    "seed",
    "epoch",
    "train_loss",
    "train_reconstruction",
    "train_contrastive",
    "val_loss",
    "val_reconstruction",
    "val_contrastive",
    "contrastive_weight",
    "learning_rate",
)

_VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "log1": {
        "epochs": 100,
        "batch_size": 32,
        "contrastive_weight_start": 0.5,
        "contrastive_weight_end": 0.5,
        "lr_schedule": False,
    },
    "log2": {
        "epochs": 150,
        "batch_size": 64,
        "contrastive_weight_start": 0.1,
        "contrastive_weight_end": 0.5,
        "lr_schedule": True,
    },
}


@dataclass(frozen=True)
class TrainingConfig:
    """Every hyper-parameter of a training run (DESIGN.md section 5).

    The field defaults are Log 2's; :meth:`for_variant` gives either variant's defaults.

    Attributes:
        variant: ``"log1"`` or ``"log2"``.
        epochs: Number of epochs.
        batch_size: Rows per training (and validation) batch.
        learning_rate: Initial Adam learning rate.
        betas: Adam's ``(beta1, beta2)``.
        eps: Adam's ``eps``.
        dropout: Dropout probability inside the residual blocks.
        hidden_dims: Widths of the residual blocks of encoder and decoder.
        latent_dim: Size of the latent space.
        projection_dim: Output size of the contrastive projection.
        temperature: Temperature of the supervised contrastive loss.
        contrastive_weight_start: Contrastive weight of the first epoch.
        contrastive_weight_end: Contrastive weight of the last epoch (linear in between).
        lr_schedule: Use ReduceLROnPlateau on the validation total loss.
        lr_factor: LR multiplier of the schedule.
        lr_patience: Epochs without improvement before the LR is reduced.
        lr_threshold: Relative improvement the schedule counts as better.
        recon_in_consistent_units: Log 1 only: z-score the decoder output before the MSE
            (the ablation); ``False`` keeps the original units mismatch.
        seeds: Seeds of the members trained (overridable in :func:`train`).
        num_threads: Threads for the whole run (``torch.set_num_threads`` during
            training); ``None`` uses the current ``torch.get_num_threads()``.
        workers: Member groups trained in parallel threads, each with
            ``num_threads // workers`` intra-op threads; ``None`` picks
            ``min(members, num_threads)``. On the 2-core target, a 5-seed ensemble in 2
            single-threaded groups ran ~20 % faster than one 2-threaded batch while the
            machine was contended, and about as fast otherwise. A member's result depends
            on its group only through float round-off (amplified over a long run); for a
            fixed config and thread count it is bit-reproducible.
        fused_adam: Use torch's fused Adam kernel (``Adam(fused=True)`` arithmetic);
            ``False`` reproduces the default ``torch.optim.Adam`` bit for bit, a little
            slower; ``None`` picks fused where available.
        keep_freed_memory: Raise glibc's malloc thresholds for the process (see
            :mod:`neural_eq_morphing.models.allocator`); a large speed-up on Linux.
    """

    variant: Variant = "log2"
    epochs: int = 150
    batch_size: int = 64
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    dropout: float = 0.1
    hidden_dims: tuple[int, ...] = DEFAULT_HIDDEN_DIMS
    latent_dim: int = 32
    projection_dim: int = 128
    temperature: float = 0.1
    contrastive_weight_start: float = 0.1
    contrastive_weight_end: float = 0.5
    lr_schedule: bool = True
    lr_factor: float = 0.5
    lr_patience: int = 20
    lr_threshold: float = 1e-4
    recon_in_consistent_units: bool = False
    seeds: tuple[int, ...] = (0,)
    num_threads: int | None = None
    workers: int | None = None
    fused_adam: bool | None = None
    keep_freed_memory: bool = True

    def __post_init__(self) -> None:
        check_variant(self.variant)
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "hidden_dims", tuple(int(d) for d in self.hidden_dims))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if len(self.betas) != 2:
            raise ValueError(f"betas needs two values, got {self.betas}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {self.num_threads}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")

    @classmethod
    def for_variant(cls, variant: Variant, **overrides: Any) -> TrainingConfig:
        """Return the configuration of ``variant`` (Log 1 or Log 2), with ``overrides``."""
        check_variant(variant)
        return cls.from_dict({"variant": variant, **_VARIANT_DEFAULTS[variant], **overrides})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingConfig:
        """Build from a plain mapping (e.g. Kedro parameters); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training parameter(s) {unknown}; expected some of {sorted(known)}"
            )
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict that :meth:`from_dict` turns back into this config."""
        values = asdict(self)
        for key in ("betas", "hidden_dims", "seeds"):
            values[key] = list(values[key])
        return values

    def model_config(self) -> dict[str, Any]:
        """The :attr:`SemanticEQModel.model_config` of the models this config trains."""
        return {
            "variant": self.variant,
            "n_features": N_PARAMETERS,
            "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim,
            "projection_dim": self.projection_dim,
            "dropout": self.dropout,
        }

    def contrastive_weights(self) -> list[float]:
        """Contrastive weight per epoch: linear from the start to the end value."""
        if self.epochs == 1:
            return [float(self.contrastive_weight_start)]
        start, end = self.contrastive_weight_start, self.contrastive_weight_end
        return [start + (end - start) * e / (self.epochs - 1) for e in range(self.epochs)]


@dataclass(frozen=True)
class TrainingTiming:
    """Wall-clock figures of a run.

    Attributes:
        setup_s: Seconds spent before the first epoch (data, initialisation).
        train_s: Seconds spent in the epochs (training and validation).
        epochs: Number of epochs run.
        members: Number of models trained together.
        epoch_s: Seconds of each epoch (training and validation).
    """

    setup_s: float
    train_s: float
    epochs: int
    members: int
    epoch_s: tuple[float, ...] = ()

    @property
    def ms_per_epoch(self) -> float:
        """Milliseconds per epoch of the whole ensemble."""
        return 1000.0 * self.train_s / self.epochs

    @property
    def ms_per_model_epoch(self) -> float:
        """Milliseconds per epoch and member."""
        return self.ms_per_epoch / self.members

    @property
    def median_ms_per_epoch(self) -> float:
        """Median milliseconds of one epoch (robust to a few slow epochs)."""
        return 1000.0 * float(np.median(self.epoch_s)) if self.epoch_s else self.ms_per_epoch


@dataclass
class TrainingResult:
    """The outcome of :func:`train`.

    Attributes:
        models: One trained :class:`SemanticEQModel` per seed, in eval mode.
        history: One row per seed and epoch; columns :data:`HISTORY_COLUMNS`.
        seeds: The seeds, in the order of ``models``.
        config: The configuration used.
        timing: Wall-clock figures.
    """

    models: list[SemanticEQModel]
    history: pd.DataFrame
    seeds: list[int]
    config: TrainingConfig
    timing: TrainingTiming
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _threads(num_threads: int | None) -> Iterator[None]:
    if num_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _features(values: Any, name: str) -> Tensor:
    array = np.asarray(values, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != N_PARAMETERS:
        raise ValueError(f"{name} must have shape (n, {N_PARAMETERS}), got {array.shape}")
    if array.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array))


def _labels(values: Any, rows: int, name: str) -> Tensor:
    array = np.asarray(values)
    if array.shape != (rows,):
        raise ValueError(f"{name} must have shape ({rows},), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {array.dtype}")
    return torch.from_numpy(array.astype(np.int64))


def _vector(values: Any, name: str) -> Tensor:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (N_PARAMETERS,):
        raise ValueError(f"{name} must hold {N_PARAMETERS} values, got shape {array.shape}")
    return torch.from_numpy(array).to(torch.float32)


def initial_models(
    config: TrainingConfig, generators: Sequence[torch.Generator]
) -> list[SemanticEQModel]:
    """Create one initialised model per generator without touching torch's global RNG."""
    models = []
    for generator in generators:
        with torch.random.fork_rng(devices=[]):
            model = build_model(config.model_config())
        initialise_parameters(model, generator)
        models.append(model)
    return models


def train(
    config: TrainingConfig,
    train_features: Any,
    train_labels: Any,
    val_features: Any,
    val_labels: Any,
    *,
    seeds: Sequence[int] | None = None,
    zscore_mean: Any = None,
    zscore_std: Any = None,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Train one model per seed, the seeds batched together as one ensemble.

    Members are split into ``workers`` contiguous groups (see
    :attr:`TrainingConfig.workers`); each group is one
    :class:`~neural_eq_morphing.models.batched.BatchedSemanticEQ` trained in its own
    thread. Grouping changes nothing but float round-off: every member has its own
    generator, optimiser state and LR schedule.

    Args:
        config: Hyper-parameters (see :class:`TrainingConfig`).
        train_features: Normalised training features ``(n, 13)``; also the target.
        train_labels: Integer term ids of the training rows ``(n,)``.
        val_features: Normalised validation features ``(n_val, 13)``.
        val_labels: Integer term ids of the validation rows ``(n_val,)``.
        seeds: Seeds of the members; defaults to ``config.seeds``.
        zscore_mean: Column means of the z-score normaliser ``(13,)``; needed by Log 1
            with ``recon_in_consistent_units``.
        zscore_std: Column standard deviations of the z-score normaliser ``(13,)``.
        progress: Called after every epoch (once all members finished it) with an
            :class:`~neural_eq_morphing.models.progress.EpochReport`; see
            :func:`~neural_eq_morphing.models.progress.default_progress`.

    Returns:
        The trained models (eval mode), the per-epoch history and timings.
    """
    started = time.perf_counter()
    seeds = [int(s) for s in (config.seeds if seeds is None else seeds)]
    if not seeds:
        raise ValueError("need at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    config = replace(config, seeds=tuple(seeds))
    data = _Data(
        x_train=_features(train_features, "train_features"),
        y_train=_labels(train_labels, len(train_features), "train_labels"),
        x_val=_features(val_features, "val_features"),
        y_val=_labels(val_labels, len(val_features), "val_labels"),
    )
    consistent = config.variant == "log1" and config.recon_in_consistent_units
    if consistent and (zscore_mean is None or zscore_std is None):
        raise ValueError(
            "Log 1 with recon_in_consistent_units needs zscore_mean and zscore_std "
            "(the z-score normaliser's mean and std vectors)"
        )
    mean = _vector(zscore_mean, "zscore_mean") if zscore_mean is not None else None
    std = _vector(zscore_std, "zscore_std") if zscore_std is not None else None
    if std is not None and bool((std <= 0).any()):
        raise ValueError("zscore_std must be positive in every column")
    if config.keep_freed_memory:
        keep_freed_memory()

    threads = config.num_threads or torch.get_num_threads()
    workers = min(len(seeds), config.workers or threads)
    intra_op = threads if workers == 1 else max(1, threads // workers)
    # inference_mode: nothing here uses autograd, and it makes every op a little cheaper.
    with _threads(intra_op), torch.inference_mode():
        # Initialise in this thread: fork_rng must not race with other threads.
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        models = initial_models(config, generators)
        groups = [
            _Group(
                index=g,
                members=members,
                ensemble=BatchedSemanticEQ.from_models(
                    [models[k] for k in members],
                    temperature=config.temperature,
                    zscore_mean=mean,
                    zscore_std=std,
                    recon_in_consistent_units=consistent,
                ),
                generators=[generators[k] for k in members],
            )
            for g, members in enumerate(_split(len(seeds), workers))
        ]
        merger = _ProgressMerger(progress, len(groups)) if progress is not None else None
        epochs_started = time.perf_counter()
        if len(groups) == 1:
            _run_group(config, groups[0], data, merger, started=started, stop=threading.Event())
        else:
            _run_parallel(config, groups, data, merger, started)
        train_s = time.perf_counter() - epochs_started
    # Export outside inference mode, so the modules' parameters are ordinary tensors.
    trained = [group.ensemble.export(k) for group in groups for k in range(len(group.members))]
    history = _history(groups)
    epoch_s = np.max([group.epoch_s for group in groups], axis=0)
    timing = TrainingTiming(
        setup_s=time.perf_counter() - started - train_s,
        train_s=train_s,
        epochs=config.epochs,
        members=len(seeds),
        epoch_s=tuple(float(v) for v in epoch_s),
    )
    return TrainingResult(trained, history, seeds, config, timing)


@dataclass
class _Data:
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor


@dataclass
class _Group:
    """Members trained together in one thread, and what their training recorded."""

    index: int
    members: list[int]
    ensemble: BatchedSemanticEQ
    generators: list[torch.Generator]
    records: list[np.ndarray] = field(default_factory=list)
    epoch_s: list[float] = field(default_factory=list)


def _split(members: int, groups: int) -> list[list[int]]:
    """Contiguous groups of member indices with sizes as equal as possible."""
    base, extra = divmod(members, groups)
    out, start = [], 0
    for g in range(groups):
        size = base + (1 if g < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


class _ProgressMerger:
    """Joins the groups' per-epoch reports into one report per epoch for the callback."""

    def __init__(self, callback: ProgressCallback, groups: int) -> None:
        self._callback = callback
        self._groups = groups
        self._pending: dict[int, dict[int, EpochReport]] = {}
        self._lock = threading.Lock()

    def __call__(self, group: int, report: EpochReport) -> None:
        with self._lock:
            parts = self._pending.setdefault(report.epoch, {})
            parts[group] = report
            if len(parts) < self._groups:
                return
            del self._pending[report.epoch]
            ordered = [parts[g] for g in range(self._groups)]
            self._callback(
                replace(
                    ordered[0],
                    seeds=sum((r.seeds for r in ordered), ()),
                    train_loss=sum((r.train_loss for r in ordered), ()),
                    val_loss=sum((r.val_loss for r in ordered), ()),
                    val_reconstruction=sum((r.val_reconstruction for r in ordered), ()),
                    val_contrastive=sum((r.val_contrastive for r in ordered), ()),
                    learning_rates=sum((r.learning_rates for r in ordered), ()),
                    elapsed_s=max(r.elapsed_s for r in ordered),
                )
            )


def _run_parallel(
    config: TrainingConfig,
    groups: list[_Group],
    data: _Data,
    merger: _ProgressMerger | None,
    started: float,
) -> None:
    stop = threading.Event()

    def work(group: _Group) -> None:
        try:
            with torch.inference_mode():
                _run_group(config, group, data, merger, started=started, stop=stop)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="train") as pool:
        futures = [pool.submit(work, group) for group in groups]
        try:
            for future in futures:
                future.result()
        except BaseException:
            stop.set()  # e.g. Ctrl-C here: the workers stop at their next epoch
            raise


def _run_group(
    config: TrainingConfig,
    group: _Group,
    data: _Data,
    merger: _ProgressMerger | None,
    *,
    started: float,
    stop: threading.Event,
) -> None:
    ensemble, generators = group.ensemble, group.generators
    members = ensemble.members
    seeds = tuple(config.seeds[k] for k in group.members)
    n, batch_size = data.x_train.shape[0], config.batch_size
    steps = -(-n // batch_size)
    dropout = config.dropout
    keep_scale = 1.0 / (1.0 - dropout)
    width = ensemble.dropout_width
    optimiser = BatchedAdam(
        ensemble.flat,
        config.learning_rate,
        betas=config.betas,
        eps=config.eps,
        fused=config.fused_adam,
    )
    scheduler = (
        PlateauScheduler(
            members,
            factor=config.lr_factor,
            patience=config.lr_patience,
            threshold=config.lr_threshold,
        )
        if config.lr_schedule
        else None
    )
    for epoch, weight in enumerate(config.contrastive_weights(), start=1):
        if stop.is_set():
            return
        epoch_started = time.perf_counter()
        lrs = list(optimiser.lrs)
        perms = torch.stack([torch.randperm(n, generator=g) for g in generators])
        totals = torch.zeros(2, members)
        for step in range(steps):
            index = perms[:, step * batch_size : (step + 1) * batch_size]
            masks = None
            if dropout > 0:
                uniform = torch.empty(members, index.shape[1], width)
                for k, generator in enumerate(generators):
                    torch.rand((index.shape[1], width), generator=generator, out=uniform[k])
                masks = uniform.ge_(dropout).mul_(keep_scale)
            losses = ensemble.loss_and_grad(data.x_train[index], data.y_train[index], masks, weight)
            optimiser.step(ensemble.grad)
            totals[0] += losses.reconstruction
            totals[1] += losses.contrastive
        totals /= steps
        val = ensemble.evaluate(data.x_val, data.y_val, batch_size)
        val_loss = val.reconstruction + weight * val.contrastive
        train_loss = totals[0] + weight * totals[1]
        group.records.append(
            np.stack(
                [
                    np.asarray(seeds, dtype=np.float64),
                    np.full(members, epoch, dtype=np.float64),
                    train_loss.double().numpy(),
                    totals[0].double().numpy(),
                    totals[1].double().numpy(),
                    val_loss.double().numpy(),
                    val.reconstruction.double().numpy(),
                    val.contrastive.double().numpy(),
                    np.full(members, weight),
                    np.asarray(lrs, dtype=np.float64),
                ],
                axis=1,
            )
        )
        if scheduler is not None:
            optimiser.lrs = scheduler.step(val_loss.tolist(), lrs)
        group.epoch_s.append(time.perf_counter() - epoch_started)
        if merger is not None:
            merger(
                group.index,
                EpochReport(
                    epoch=epoch,
                    epochs=config.epochs,
                    seeds=seeds,
                    train_loss=tuple(train_loss.tolist()),
                    val_loss=tuple(val_loss.tolist()),
                    val_reconstruction=tuple(val.reconstruction.tolist()),
                    val_contrastive=tuple(val.contrastive.tolist()),
                    contrastive_weight=weight,
                    learning_rates=tuple(lrs),
                    elapsed_s=time.perf_counter() - started,
                ),
            )


def _history(groups: Sequence[_Group]) -> pd.DataFrame:
    """One row per member and epoch, members in seed order, epochs ascending."""
    # (epochs, members, columns) -> (members, epochs, columns)
    table = np.concatenate([np.stack(group.records) for group in groups], axis=1)
    table = table.transpose(1, 0, 2).reshape(-1, len(HISTORY_COLUMNS))
    history = pd.DataFrame(table, columns=list(HISTORY_COLUMNS))
    history["seed"] = history["seed"].astype(np.int64)
    history["epoch"] = history["epoch"].astype(np.int64)
    return history
