"""Training of the semantic EQ models: several models at once, as one batched ensemble.

Each model is a *member* of the ensemble. :func:`train` trains one member per seed, all
on the same training and validation rows; :func:`train_members` trains members that each
have rows of their own (:class:`MemberData`: seed, training and validation rows,
z-score vectors; row counts may differ, seeds may repeat), e.g. every fold × seed of a
cross-validation in one ensemble. Both drive the same engine:

1. :class:`~neural_eq_morphing.models.network.SemanticEQModel` holds the members in one
   flat ``(M, P)`` parameter, each member's initial weights drawn from its own generator;
2. each step's forward runs batched over the members, its losses are
   :class:`~neural_eq_morphing.models.losses.Objective`'s, and autograd gives the
   gradient of every member at once (:meth:`_Group.step`);
3. :class:`~neural_eq_morphing.models.optim.MemberAdam` makes the step and the LR
   schedule with the public torch classes: ``torch.optim.Adam`` over the members' rows
   of the flat buffer (each row a parameter with its own state), and one
   ``torch.optim.lr_scheduler.ReduceLROnPlateau`` per member on its validation loss.

Every member gets the training it would get alone (``train(config, <its rows>,
seeds=[its seed])``): its own ``torch.Generator`` (seeded with its seed) draws, in this
order, its initial weights, then per epoch the permutation of its training rows and per
step the dropout masks of its batch; it has its own Adam state and learning rate and
its own plateau schedule. Batched and solo runs of a member differ only by float
round-off (about 1e-8 after an epoch, amplified over a long run). Same members, config
and thread count ⇒ bit-identical results.

Per epoch: shuffled mini-batches of the member's rows (the last one may be smaller),
loss ``reconstruction + w · contrastive (+ β · KL for a β-VAE)`` with the epoch's
contrastive weight ``w`` and KL weight ``β``, one Adam step per batch; then the
validation losses in eval mode (no dropout) over consecutive batches of ``batch_size`` of
its validation rows; then the LR schedule (if
any) on the validation total loss. Training losses are means over the member's batches,
validation losses means over its validation batches.

Members with rows of their own: a member with ``n`` rows has ``ceil(n / batch_size)``
steps per epoch and the ensemble as many steps as its longest member. While every
member's batch at a step has the same size the step is the plain batched one; otherwise
the batches are padded to the largest and a row mask keeps the padded rows out of every
loss and gradient (:mod:`~neural_eq_morphing.models.losses`); a member whose epoch is
over takes no Adam step. With shared rows (:func:`train`) the sizes always agree, and
validation is one pass over the shared rows.

Groups (:attr:`TrainingConfig.workers`): the members may be split into a few contiguous
groups, each a model of its own trained in its own thread on one intra-op thread.
Measured on the 2-core target with this engine (benchmarks/train_speed.py ``--workers``,
idle machine): 2 groups take 0.91× the time per epoch of one group at 19 and 55 members
and 1.09× at 5; with the engine before (hand-written gradients) they paid more, and far
more while another process took a core (38 s against 276 s for a 5-member ensemble):
OpenMP threads wait for each other at every operation, so a taken core stalls them all.

Nothing touches the disk, and torch's global RNG is not used. The one process-wide
effect: while more than one group trains, torch's intra-op thread count is
``torch.get_num_threads() // workers`` (set with ``torch.set_num_threads``, restored
afterwards).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from neural_eq_morphing.eq.parameters import N_PARAMETERS
from neural_eq_morphing.models.config import MEMBER_FIELDS, TrainingConfig
from neural_eq_morphing.models.heads import same_output_space
from neural_eq_morphing.models.losses import (
    Objective,
    StepLosses,
    kl_per_row,
    masked_mean,
    supervised_contrastive_loss,
)
from neural_eq_morphing.models.members import (
    MemberData,
    _Data,
    _features,
    _labels,
    _PerMember,
    _Rows,
    _Shared,
    _zscore,
)
from neural_eq_morphing.models.network import SemanticEQModel
from neural_eq_morphing.models.optim import MemberAdam
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
    "train_kl",
    "val_kl",
    "kl_weight",
)
#: Columns of :attr:`TrainingResult.history` from :func:`train_members`, in order: the
#: member's index into the ``members`` given, then :data:`HISTORY_COLUMNS`.
MEMBER_HISTORY_COLUMNS: tuple[str, ...] = ("member", *HISTORY_COLUMNS)


@dataclass(frozen=True)
class TrainingTiming:
    """Wall-clock figures of a run.

    Attributes:
        setup_s: Seconds spent outside the epochs (data, initialisation, export).
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
    """The outcome of :func:`train` or :func:`train_members`.

    Attributes:
        models: One trained :class:`SemanticEQModel` per member, in eval mode.
        history: One row per member and epoch (members in the order given, epochs
            ascending); columns :data:`HISTORY_COLUMNS` from :func:`train`,
            :data:`MEMBER_HISTORY_COLUMNS` (the member index first) from
            :func:`train_members`.
        seeds: The members' seeds, in the order of ``models`` (distinct from
            :func:`train`; they may repeat from :func:`train_members`).
        config: The configuration used.
        timing: Wall-clock figures.
    """

    models: list[SemanticEQModel]
    history: pd.DataFrame
    seeds: list[int]
    config: TrainingConfig
    timing: TrainingTiming


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
    """Train one model per seed on shared rows, the seeds batched together as one ensemble.

    Every member (one per seed) trains and validates on the same rows; see
    :func:`train_members` for members with rows of their own (this is the same engine).

    Args:
        config: Hyper-parameters (see :class:`TrainingConfig`).
        train_features: Normalised training features ``(n, 13)``; also the target.
        train_labels: Integer term ids of the training rows ``(n,)``.
        val_features: Normalised validation features ``(n_val, 13)``.
        val_labels: Integer term ids of the validation rows ``(n_val,)``.
        seeds: Seeds of the members, distinct; defaults to ``config.seeds``.
        zscore_mean: Column means of the z-score normaliser ``(13,)``; needed with
            ``recon_in_consistent_units``.
        zscore_std: Column standard deviations of the z-score normaliser ``(13,)``.
        progress: Called after every epoch with an
            :class:`~neural_eq_morphing.models.progress.EpochReport` of all members; see
            :func:`~neural_eq_morphing.models.progress.default_progress`.

    Returns:
        The trained models (eval mode, one per seed), the per-epoch history (columns
        :data:`HISTORY_COLUMNS`) and timings.
    """
    started = time.perf_counter()
    seeds = [int(s) for s in (config.seeds if seeds is None else seeds)]
    if not seeds:
        raise ValueError("need at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    config = config.with_changes(seeds=tuple(seeds))
    x_train = _features(train_features, "train_features")
    x_val = _features(val_features, "val_features")
    data = _Shared(
        x_train=x_train,
        y_train=_labels(train_labels, x_train.shape[0], "train_labels"),
        x_val=x_val,
        y_val=_labels(val_labels, x_val.shape[0], "val_labels"),
        zscore=_zscore(config, zscore_mean, zscore_std),
    )
    models, history, timing = _fit(config, seeds, data, progress, started)
    return TrainingResult(models, history[list(HISTORY_COLUMNS)], seeds, config, timing)


def train_members(
    config: TrainingConfig,
    members: Sequence[MemberData],
    *,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Train one model per member, each on rows of its own, batched as one ensemble.

    A member (:class:`MemberData`) is one model with its own seed, training rows,
    validation rows and z-score vectors; e.g. the folds × seeds of a cross-validation
    trained at once. Row counts may differ between members and seeds may repeat.

    Guarantee: member ``k`` gets the training it would get alone, i.e. its weights and
    history equal those of ``train(config, <its rows>, seeds=[its seed],
    zscore_mean=..., zscore_std=...)`` to float round-off. Its generator draws, in
    :func:`train`'s order, its initial weights, per epoch a permutation of its own rows
    and per step the dropout masks of its own batch; its epoch has its own
    ``ceil(n / batch_size)`` steps (the ensemble runs as many steps as its longest
    member; a member whose epoch is over takes no Adam step); its validation runs over
    its own rows in consecutive batches of ``batch_size``; its learning rate schedule
    follows its own validation loss. Padded rows of shorter batches contribute exactly
    nothing.

    Args:
        config: Hyper-parameters (see :class:`TrainingConfig`); ``config.seeds`` is
            ignored (each member has its seed). With ``recon_in_consistent_units``
            every member needs its ``zscore_mean`` and ``zscore_std``.
        members: The members, at least one.
        progress: Called after every epoch with an
            :class:`~neural_eq_morphing.models.progress.EpochReport` of all members
            (its ``seeds`` one per member, in member order, possibly repeating).

    Returns:
        The trained models (eval mode, one per member, in member order); the history
        with columns :data:`MEMBER_HISTORY_COLUMNS` (``member`` the index into
        ``members``), sorted by member then epoch; ``seeds`` one per member; ``config``
        with ``seeds`` the distinct seeds in order of first use; timings.

    Raises:
        ValueError: No members, or a member's arrays or z-score vectors are invalid
            (the message names the member's index).
        TypeError: A member is not a :class:`MemberData`.
    """
    started = time.perf_counter()
    if len(members) == 0:
        raise ValueError("need at least one member")
    seeds: list[int] = []
    train_x: list[Tensor] = []
    train_y: list[Tensor] = []
    val_x: list[Tensor] = []
    val_y: list[Tensor] = []
    zscores: list[tuple[Tensor, Tensor] | None] = []
    configs: list[TrainingConfig] = []
    for k, member in enumerate(members):
        if not isinstance(member, MemberData):
            raise TypeError(f"members[{k}] must be a MemberData, got {type(member).__name__}")
        name = f"members[{k}]"
        configs.append(_member_config(config, member.config, name))
        seeds.append(int(member.seed))
        train_x.append(_features(member.train_features, f"{name}.train_features"))
        train_y.append(_labels(member.train_labels, train_x[-1].shape[0], f"{name}.train_labels"))
        val_x.append(_features(member.val_features, f"{name}.val_features"))
        val_y.append(_labels(member.val_labels, val_x[-1].shape[0], f"{name}.val_labels"))
        zscores.append(_zscore(configs[-1], member.zscore_mean, member.zscore_std, f"{name}: "))
    consistent = any(c.recon_in_consistent_units for c in configs)
    config = config.with_changes(
        seeds=tuple(dict.fromkeys(seeds)), recon_in_consistent_units=consistent
    )
    zscore = None
    if consistent:
        # A member whose loss keeps the original units gets the identity z-score (mean 0,
        # std 1): (x - 0) / 1 is x exactly, so its loss and gradient are unchanged.
        identity = (torch.zeros(N_PARAMETERS), torch.ones(N_PARAMETERS))
        zscore = (
            torch.stack([(z or identity)[0] for z in zscores]).unsqueeze(1),
            torch.stack([(z or identity)[1] for z in zscores]).unsqueeze(1),
        )
    data = _PerMember(_Rows.stack(train_x, train_y), _Rows.stack(val_x, val_y), zscore)
    same = all(c == configs[0] for c in configs) and configs[0] == config
    models, history, timing = _fit(
        config, seeds, data, progress, started, None if same else configs
    )
    return TrainingResult(models, history, seeds, config, timing)


def _member_config(config: TrainingConfig, own: TrainingConfig | None, name: str) -> TrainingConfig:
    """A member's config: its own (checked against the ensemble's) or the ensemble's."""
    if own is None:
        return config.with_changes(seeds=(0,))
    if not isinstance(own, TrainingConfig):
        raise TypeError(f"{name}.config must be a TrainingConfig, got {type(own).__name__}")
    differ = [
        name
        for name in TrainingConfig.model_fields
        if name not in (*MEMBER_FIELDS, "seeds") and getattr(own, name) != getattr(config, name)
    ]
    if differ:
        raise ValueError(
            f"{name}.config differs from the ensemble's in {differ}; the members of one "
            f"ensemble may differ only in {list(MEMBER_FIELDS)}"
        )
    if not same_output_space([own.decoder_head, config.decoder_head]):
        raise ValueError(
            f"{name}.config has decoder_head {own.decoder_head!r}, the ensemble "
            f"{config.decoder_head!r}; only the normalised and separate heads may mix"
        )
    return own.with_changes(seeds=(0,))


def _fit(
    config: TrainingConfig,
    seeds: list[int],
    data: _Data,
    progress: ProgressCallback | None,
    started: float,
    configs: Sequence[TrainingConfig] | None = None,
) -> tuple[list[SemanticEQModel], pd.DataFrame, TrainingTiming]:
    """The engine of :func:`train` and :func:`train_members`: one member per seed.

    ``configs``: each member's own config, when they differ (:data:`MEMBER_FIELDS`).
    """
    threads = torch.get_num_threads()
    workers = min(len(seeds), config.workers or threads)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    heads = [(configs[k] if configs else config).decoder_head for k in range(len(seeds))]
    groups = [
        _Group.of(
            config,
            members,
            [seeds[k] for k in members],
            [heads[k] for k in members],
            [generators[k] for k in members],
            data.take(members),
            None if configs is None else [configs[k] for k in members],
        )
        for members in _split(len(seeds), workers)
    ]
    reporter = _EpochReporter(config, groups, progress, started)
    epochs_started = time.perf_counter()
    if len(groups) == 1:
        _run_group(config, groups[0], reporter, threading.Event())
    else:
        with _intra_op_threads(max(1, threads // len(groups))):
            _run_parallel(config, groups, reporter)
    train_s = time.perf_counter() - epochs_started
    trained = [group.model.member(k) for group in groups for k in range(group.model.members)]
    columns: dict[str, list[Any]] = {name: [] for name in MEMBER_HISTORY_COLUMNS}
    for epoch in range(1, config.epochs + 1):
        _append(columns, reporter.record(epoch))
    timing = TrainingTiming(
        setup_s=time.perf_counter() - started - train_s,
        train_s=train_s,
        epochs=config.epochs,
        members=len(seeds),
        epoch_s=tuple(np.max([group.epoch_s for group in groups], axis=0).tolist()),
    )
    return trained, _history(columns), timing


@dataclass
class _Group:
    """Members trained together as one batched model, in one thread, and their records."""

    model: SemanticEQModel
    #: ``model.flat`` without autograd: the buffer the optimiser steps in place.
    flat: Tensor
    #: The gradient buffer that every step overwrites (the rows' ``.grad``).
    grad: Tensor
    #: Per-parameter views of :attr:`flat`: the step's leaves (``requires_grad``).
    leaves: dict[str, Tensor]
    #: The same leaves in layout order, what ``autograd.grad`` differentiates against.
    leaf_list: list[Tensor]
    #: The matching views of :attr:`grad`.
    grad_views: list[Tensor]
    objective: Objective
    generators: list[torch.Generator]
    optimiser: MemberAdam
    members: list[int]  # indices among all members
    seeds: list[int]
    data: _Data
    #: Per epoch, the contrastive weight: one number, or one per member when they differ.
    weights: list[float | Tensor]
    #: Per epoch, β (the KL term's weight).
    kl_weights: list[float]
    records: list[dict[str, list[Any]]] = field(default_factory=list)
    epoch_s: list[float] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        config: TrainingConfig,
        members: list[int],
        seeds: list[int],
        heads: list[str],
        generators: list[torch.Generator],
        data: _Data,
        configs: Sequence[TrainingConfig] | None = None,
    ) -> _Group:
        """Draw the members' initial weights from their generators and set up their step."""
        model = SemanticEQModel.initialised(config.network_config(), generators, heads)
        flat = model.flat.detach()
        grad = torch.zeros_like(flat)
        leaves = {
            name: view.requires_grad_(True) for name, view in model.layout.views(flat).items()
        }
        objective = Objective.of(
            config.temperature,
            len(members),
            data.zscore,
            [c.perceptual_weight for c in configs] if configs else config.perceptual_weight,
        )
        schedules = [c.contrastive_weights() for c in configs or [config]]
        weights: list[float | Tensor] = [
            values[0] if len(set(values)) == 1 else torch.tensor(values)
            for values in zip(*schedules, strict=True)
        ]
        optimiser = MemberAdam(config, flat, grad, configs)
        return cls(
            model,
            flat,
            grad,
            leaves,
            list(leaves.values()),
            list(model.layout.views(grad).values()),
            objective,
            generators,
            optimiser,
            members,
            seeds,
            data,
            weights,
            config.kl_weights(),
        )

    def step(
        self,
        x: Tensor,
        labels: Tensor,
        masks: Tensor | None,
        noise: Tensor | None,
        valid: Tensor | None,
        weight: float | Tensor,
        kl_weight: float,
    ) -> StepLosses:
        """Forward and autograd backward of ``reconstruction + w · contrastive + β · KL``.

        Overwrites :attr:`grad` with every member's gradient (members' losses depend on
        their own rows of the parameter only, so the gradient of their sum is each
        member's own). ``torch.autograd.grad`` returns the leaves' gradients without
        accumulating them (10% faster than ``backward`` into ``.grad`` views at one
        member, measured).
        """
        with torch.enable_grad():
            fwd = self.model.run(x, params=self.leaves, masks=masks, noise=noise, training=True)
            losses = self.objective.losses(fwd, x, labels, valid)
            total = losses.reconstruction + weight * losses.contrastive
            if kl_weight:
                total = total + kl_weight * losses.kl
            gradients = torch.autograd.grad(total.sum(), self.leaf_list)
        # One foreach copy into the buffer's views (a third of a cat's time, measured).
        torch._foreach_copy_(self.grad_views, gradients)
        return StepLosses(*(part.detach() for part in losses))


class _EpochReporter:
    """Joins the groups' records of an epoch, and calls ``progress`` once all have it."""

    def __init__(
        self,
        config: TrainingConfig,
        groups: Sequence[_Group],
        progress: ProgressCallback | None,
        started: float,
    ) -> None:
        self._config, self._groups, self._progress = config, groups, progress
        self._started = started
        self._finished: dict[int, int] = {}
        self._lock = threading.Lock()

    def record(self, epoch: int) -> dict[str, list[Any]]:
        """All members' values of ``epoch`` (1-based), column by column, in member order."""
        parts = [group.records[epoch - 1] for group in self._groups]
        record = {name: [v for part in parts for v in part[name]] for name in parts[0]}
        members = [member for group in self._groups for member in group.members]
        seeds = [seed for group in self._groups for seed in group.seeds]
        record.update(member=members, seed=seeds, epoch=[epoch] * len(seeds))
        return record

    def finished(self, epoch: int) -> None:
        """A group finished ``epoch``; report it when it was the last one to."""
        if self._progress is None:
            return
        with self._lock:
            self._finished[epoch] = self._finished.get(epoch, 0) + 1
            if self._finished[epoch] < len(self._groups):
                return
            del self._finished[epoch]
            record = self.record(epoch)
            self._progress(
                EpochReport(
                    epoch=epoch,
                    epochs=self._config.epochs,
                    seeds=tuple(record["seed"]),
                    train_loss=tuple(record["train_loss"]),
                    val_loss=tuple(record["val_loss"]),
                    val_reconstruction=tuple(record["val_reconstruction"]),
                    val_contrastive=tuple(record["val_contrastive"]),
                    contrastive_weight=record["contrastive_weight"][0],
                    learning_rates=tuple(record["learning_rate"]),
                    elapsed_s=time.perf_counter() - self._started,
                )
            )


def _run_parallel(
    config: TrainingConfig, groups: Sequence[_Group], reporter: _EpochReporter
) -> None:
    """Train every group in its own thread; the first error stops the others."""
    stop = threading.Event()

    def work(group: _Group) -> None:
        try:
            _run_group(config, group, reporter, stop)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(len(groups), thread_name_prefix="train") as pool:
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
    reporter: _EpochReporter,
    stop: threading.Event,
) -> None:
    """All epochs of one group: train, validate, step the members' LR schedules."""
    # Gradients only inside the step (Group.step); grad mode is per thread, hence here.
    with torch.no_grad():
        for epoch, (weight, kl_weight) in enumerate(
            zip(group.weights, group.kl_weights, strict=True), start=1
        ):
            if stop.is_set():
                return
            epoch_started = time.perf_counter()
            record = _epoch(config, group, weight, kl_weight)
            group.optimiser.end_epoch(record["val_loss"])
            group.records.append(record)
            group.epoch_s.append(time.perf_counter() - epoch_started)
            reporter.finished(epoch)


def _split(members: int, groups: int) -> list[list[int]]:
    """Contiguous groups of member indices with sizes as equal as possible."""
    base, extra = divmod(members, groups)
    out, start = [], 0
    for g in range(groups):
        size = base + (1 if g < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


@contextlib.contextmanager
def _intra_op_threads(count: int) -> Iterator[None]:
    """Set torch's intra-op thread count for the block (nothing when it is already so)."""
    previous = torch.get_num_threads()
    if count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _permutations(data: _Data, generators: Sequence[torch.Generator]) -> Tensor:
    """Each member's permutation of its training rows, ``(M, N)`` (padded with row 0)."""
    if isinstance(data, _Shared):
        n = data.x_train.shape[0]
        return torch.stack([torch.randperm(n, generator=g) for g in generators])
    counts = data.train.counts
    perms = torch.zeros(len(counts), max(counts), dtype=torch.int64)
    for k, (n, generator) in enumerate(zip(counts, generators, strict=True)):
        perms[k, :n] = torch.randperm(n, generator=generator)
    return perms


def _epoch(
    config: TrainingConfig, group: _Group, weight: float | Tensor, kl_weight: float
) -> dict[str, list[Any]]:
    """Train every member of a group for one epoch and validate; one value per member.

    Step ``s`` takes rows ``s·batch_size`` to ``(s+1)·batch_size`` of each member's
    permutation: ``sizes[k]`` rows, fewer in a member's last step, none after it. While
    all sizes agree (always with shared rows) the step is the plain batched one; else the
    batches are padded to the largest with a row mask, and members without rows take no
    Adam step. A member's epoch losses are the means over its own steps. A variational
    member draws its latent noise after its dropout masks, from the same generator.
    """
    model, generators, optimiser, data = group.model, group.generators, group.optimiser, group.data
    members = model.members
    batch_size = config.batch_size
    dropout = config.dropout
    keep_scale = 1.0 / (1.0 - dropout)
    width = sum(model.layout.dropout_widths)
    learning_rates = optimiser.learning_rates
    counts = data.train_counts * members if isinstance(data, _Shared) else data.train_counts
    member_steps = [-(-n // batch_size) for n in counts]
    perms = _permutations(data, generators)
    rows = torch.arange(members).unsqueeze(1)
    totals = torch.zeros(3, members)
    for step in range(max(member_steps)):
        start = step * batch_size
        sizes = [min(batch_size, max(0, n - start)) for n in counts]
        batch, even = max(sizes), min(sizes) == max(sizes)
        index = perms[:, start : start + batch]
        if isinstance(data, _Shared):
            x, y = data.x_train[index], data.y_train[index]
        else:
            x, y = data.train.x[rows, index], data.train.y[rows, index]
        masks = None
        if dropout > 0:
            uniform = _member_draws(torch.rand, sizes, width, generators)
            masks = uniform.ge_(dropout).mul_(keep_scale)
        noise = None
        if model.variational:
            noise = _member_draws(torch.randn, sizes, model.latent_dim, generators)
        valid = None if even else torch.arange(batch) < torch.tensor(sizes).unsqueeze(1)
        losses = group.step(x, y, masks, noise, valid, weight, kl_weight)
        # Members without rows this step (0 losses) take no Adam step.
        optimiser.step(None if even else [size > 0 for size in sizes])
        totals[0] += losses.reconstruction
        totals[1] += losses.contrastive
        totals[2] += losses.kl
    if len(set(member_steps)) == 1:
        totals /= member_steps[0]
    else:
        totals /= torch.tensor(member_steps, dtype=totals.dtype)
    if isinstance(data, _Shared):
        n = data.x_val.shape[0]
        val = validation_losses(
            model,
            group.objective,
            data.x_val.expand(members, *data.x_val.shape),
            data.y_val.expand(members, n),
            [n] * members,
            batch_size,
        )
    else:
        val = validation_losses(
            model, group.objective, data.val.x, data.val.y, data.val.counts, batch_size
        )
    return {
        "train_loss": (totals[0] + weight * totals[1] + kl_weight * totals[2]).tolist(),
        "train_reconstruction": totals[0].tolist(),
        "train_contrastive": totals[1].tolist(),
        "val_loss": (val.reconstruction + weight * val.contrastive + kl_weight * val.kl).tolist(),
        "val_reconstruction": val.reconstruction.tolist(),
        "val_contrastive": val.contrastive.tolist(),
        "contrastive_weight": [weight] * members if isinstance(weight, float) else weight.tolist(),
        "learning_rate": learning_rates,
        "train_kl": totals[2].tolist(),
        "val_kl": val.kl.tolist(),
        "kl_weight": [kl_weight] * members,
    }


@torch.no_grad()
def validation_losses(
    model: SemanticEQModel,
    objective: Objective,
    x: Tensor,
    labels: Tensor,
    counts: Sequence[int],
    batch_size: int,
) -> StepLosses:
    """Eval-mode losses of every member over consecutive batches of its own rows.

    Member ``k`` is evaluated on its first ``counts[k]`` rows in consecutive batches of
    ``batch_size`` rows (its last batch may be smaller); each loss is the mean of its
    per-batch values, as a loop over a non-shuffled ``DataLoader`` would report. Rows past
    a member's count are padding (finite) and do not count.

    Args:
        model: The members (eval mode: no dropout, a variational latent's mean).
        objective: The members' losses.
        x: Features ``(M, N, 13)``, member ``k``'s rows first.
        labels: Class ids ``(M, N)``.
        counts: Rows of each member, each in ``[1, N]``.
        batch_size: Rows per batch.

    Returns:
        Per-member loss components, each ``(M,)``.
    """
    members, n = x.shape[0], x.shape[1]
    if len(counts) != members or not all(1 <= c <= n for c in counts):
        raise ValueError(f"counts must be {members} values in [1, {n}], got {list(counts)}")
    fwd = model.run(x)
    kl = torch.zeros(members, n) if fwd.posterior is None else kl_per_row(*fwd.posterior)
    # Reconstruction and KL per row, one above the other: (M, 2, N), padded to whole batches.
    per_row = torch.stack([objective.reconstruction_rows(fwd.output, x), kl], 1)
    batches = -(-n // batch_size)
    pad = batches * batch_size - n
    projection = torch.nn.functional.pad(fwd.projection, (0, 0, 0, pad))
    per_row = torch.nn.functional.pad(per_row, (0, pad))
    labels = torch.nn.functional.pad(labels, (0, pad))
    valid = torch.arange(batches * batch_size) < torch.tensor(list(counts)).unsqueeze(1)
    valid = valid.view(members, batches, batch_size)
    # Per batch the mean over its valid rows, then per member the mean over its batches.
    per_batch = masked_mean(per_row.view(members, 2, batches, batch_size), valid.unsqueeze(1))
    contrastive = supervised_contrastive_loss(
        projection.view(members, batches, batch_size, -1),
        labels.view(members, batches, batch_size),
        objective.temperature,
        valid,
    )
    used = valid.any(-1)
    recon, kl_mean = masked_mean(per_batch, used.unsqueeze(1)).unbind(-1)
    return StepLosses(recon, masked_mean(contrastive, used), kl_mean)


def _member_draws(
    draw: Any, sizes: Sequence[int], width: int, generators: Sequence[torch.Generator]
) -> Tensor:
    """Each member's own draws for its rows of a step, ``(M, max(sizes), width)``.

    Member ``k`` draws ``draw((sizes[k], width))`` (``torch.rand`` or ``torch.randn``)
    from its own generator, as it would alone; padded rows are 0.
    """
    even = min(sizes) == max(sizes)
    out = (torch.empty if even else torch.zeros)(len(sizes), max(sizes), width)
    for k, (size, generator) in enumerate(zip(sizes, generators, strict=True)):
        if size:
            draw((size, width), generator=generator, out=out[k, :size])
    return out


def _append(columns: dict[str, list[Any]], record: Mapping[str, Sequence[Any]]) -> None:
    """Add one epoch's values (one per member) to the history, column by column name."""
    if record.keys() != columns.keys():
        raise RuntimeError(
            f"an epoch record has columns {sorted(record)}, the history {sorted(columns)}"
        )
    for name, values in record.items():
        columns[name].extend(values)


def _history(columns: Mapping[str, list[Any]]) -> pd.DataFrame:
    """One row per member and epoch, sorted by member then epoch; the member column first."""
    history = pd.DataFrame(columns)
    history = history.iloc[np.lexsort((history["epoch"], history["member"]))]
    history = history.reset_index(drop=True)
    history = history.astype({"member": np.int64, "seed": np.int64, "epoch": np.int64})
    return history[list(MEMBER_HISTORY_COLUMNS)]
