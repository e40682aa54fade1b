"""The rows of an ensemble's members: each member's data, validated and stacked.

:class:`MemberData` is what a caller gives :func:`~neural_eq_morphing.models.training.train_members`
per member; the engine keeps the rows of all members either shared (:class:`_Shared`,
:func:`~neural_eq_morphing.models.training.train`) or padded to the longest member
(:class:`_PerMember`). Errors name the member and the array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from neural_eq_morphing.eq.parameters import N_PARAMETERS
from neural_eq_morphing.models.config import TrainingConfig


@dataclass(frozen=True, eq=False)
class MemberData:
    """One member of :func:`train_members`: a seed and rows of its own.

    A member is one model of a batched ensemble. With :func:`train_members` each member
    has its own training and validation rows (the row counts may differ between
    members), its own z-score vectors and its own seed (seeds may repeat across members,
    e.g. the same seeds on different cross-validation folds), and it gets the training
    it would get alone: that of ``train(config, <its rows>, seeds=[seed], ...)``, to
    float round-off.

    The arrays are validated as :func:`train`'s arguments are (errors name the member's
    index); they are not copied until training starts.

    Attributes:
        seed: Seed of the member's generator (initial weights, batch order, dropout).
        train_features: Normalised training features ``(n, 13)``, ``n >= 1``; also the
            target.
        train_labels: Integer term ids of the training rows ``(n,)``.
        val_features: Normalised validation features ``(n_val, 13)``, ``n_val >= 1``.
        val_labels: Integer term ids of the validation rows ``(n_val,)``.
        zscore_mean: Column means of the member's z-score normaliser ``(13,)``; needed
            with ``recon_in_consistent_units``.
        zscore_std: Column standard deviations of the member's z-score normaliser
            ``(13,)``, positive.
        config: The member's own training configuration, when it differs from the
            ensemble's; only in :data:`MEMBER_FIELDS` (its loss's units, learning rate,
            contrastive weights, LR schedule), so that e.g. a design and its ablations
            train as one ensemble. ``None``: the ensemble's.
    """

    seed: int
    train_features: Any
    train_labels: Any
    val_features: Any
    val_labels: Any
    zscore_mean: Any = None
    zscore_std: Any = None
    config: TrainingConfig | None = None


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


def _zscore(
    config: TrainingConfig, mean: Any, std: Any, prefix: str = ""
) -> tuple[Tensor, Tensor] | None:
    """The validated z-score vectors, when the config's loss needs them (else ``None``).

    Vectors given although the loss does not need them are validated all the same.
    """
    if config.recon_in_consistent_units and (mean is None or std is None):
        raise ValueError(
            f"{prefix}recon_in_consistent_units needs zscore_mean and zscore_std "
            "(the z-score normaliser's mean and std vectors)"
        )
    mean_t = _vector(mean, f"{prefix}zscore_mean") if mean is not None else None
    std_t = _vector(std, f"{prefix}zscore_std") if std is not None else None
    if std_t is not None and bool((std_t <= 0).any()):
        raise ValueError(f"{prefix}zscore_std must be positive in every column")
    if not config.recon_in_consistent_units or mean_t is None or std_t is None:
        return None
    return mean_t, std_t


@dataclass
class _Shared:
    """Rows every member trains and validates on (:func:`train`)."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    zscore: tuple[Tensor, Tensor] | None  # (13,) each

    @property
    def train_counts(self) -> list[int]:
        return [self.x_train.shape[0]]

    def take(self, members: Sequence[int]) -> _Shared:
        """The data of some members: the same rows."""
        return self


@dataclass
class _Rows:
    """Rows of each member, padded to the longest: ``x`` ``(M, N, 13)``, ``y`` ``(M, N)``.

    Member ``k``'s rows are ``x[k, :counts[k]]``; the padding is zeros (finite).
    """

    x: Tensor
    y: Tensor
    counts: list[int]

    @classmethod
    def stack(cls, features: Sequence[Tensor], labels: Sequence[Tensor]) -> _Rows:
        counts = [f.shape[0] for f in features]
        x = torch.zeros(len(counts), max(counts), N_PARAMETERS)
        y = torch.zeros(len(counts), max(counts), dtype=torch.int64)
        for k, (f, label) in enumerate(zip(features, labels, strict=True)):
            x[k, : counts[k]] = f
            y[k, : counts[k]] = label
        return cls(x, y, counts)

    def take(self, members: Sequence[int]) -> _Rows:
        counts = [self.counts[k] for k in members]
        index = torch.tensor(list(members))
        n = max(counts)
        return _Rows(self.x[index, :n].contiguous(), self.y[index, :n].contiguous(), counts)


@dataclass
class _PerMember:
    """Rows of each member (:func:`train_members`)."""

    train: _Rows
    val: _Rows
    zscore: tuple[Tensor, Tensor] | None  # (M, 1, 13) each

    @property
    def train_counts(self) -> list[int]:
        return self.train.counts

    def take(self, members: Sequence[int]) -> _PerMember:
        """The data of some members (in that order)."""
        index = torch.tensor(list(members))
        zscore = None if self.zscore is None else (self.zscore[0][index], self.zscore[1][index])
        return _PerMember(self.train.take(members), self.val.take(members), zscore)


_Data = _Shared | _PerMember
