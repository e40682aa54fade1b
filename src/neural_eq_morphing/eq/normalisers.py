"""Feature normalisers for the 13 EQ parameters (docs/design.md section 4).

* :class:`MinMaxNormaliser` — Log 2's features: chosen parameter kinds (frequency and Q)
  on log10, then min-max to [0, 1] using the plug-in limits. Nothing is fitted.
* :class:`ZScoreNormaliser` — Log 1's features: per-column mean and standard deviation,
  fitted on the training split only.
* :class:`IdentityNormaliser` — values already in plug-in units (describes a decoder
  that outputs dB / Hz / Q directly).

Both are small objects that serialise to and from plain JSON-able dicts, and offer
``transform`` / ``inverse_transform`` on arrays of shape ``(n, 13)`` in file column order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from neural_eq_morphing.eq.parameters import (
    LOWER_LIMITS,
    N_PARAMETERS,
    PARAMETER_NAMES,
    PARAMETERS,
    UPPER_LIMITS,
)

_KINDS = ("gain", "freq", "q")


def _as_matrix(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != N_PARAMETERS:
        raise ValueError(
            f"expected an array of shape (n, {N_PARAMETERS}) with columns "
            f"{', '.join(PARAMETER_NAMES)}; got shape {array.shape}"
        )
    return array


def _vector(payload: Mapping[str, Any], key: str) -> np.ndarray:
    if key not in payload:
        raise ValueError(f"normaliser JSON lacks the field '{key}'")
    vector = np.asarray(payload[key], dtype=np.float64)
    if vector.shape != (N_PARAMETERS,):
        raise ValueError(
            f"normaliser field '{key}' must hold {N_PARAMETERS} values, got shape {vector.shape}"
        )
    return vector


def _check_columns(payload: Mapping[str, Any]) -> None:
    columns = tuple(payload.get("columns", ()))
    if columns != PARAMETER_NAMES:
        raise ValueError(
            "normaliser JSON is for other columns: expected "
            f"{list(PARAMETER_NAMES)}, got {list(columns)}"
        )


@dataclass(frozen=True)
class MinMaxNormaliser:
    """Min-max scaling to [0, 1] between fixed limits, optionally on log10.

    Attributes:
        lower: Lower limit per column, in plug-in units.
        upper: Upper limit per column, in plug-in units.
        log_scaled: Per column, whether the value is taken on log10 before scaling.
    """

    lower: np.ndarray
    upper: np.ndarray
    log_scaled: np.ndarray
    kind: ClassVar[str] = "minmax"

    @classmethod
    def from_plugin_limits(cls, log_kinds: Sequence[str] = ("freq", "q")) -> MinMaxNormaliser:
        """Build the normaliser from the SAFE plug-in limits.

        Args:
            log_kinds: Parameter kinds (``gain``, ``freq``, ``q``) scaled on log10.
                Log 2 uses ``("freq", "q")``.
        """
        unknown = sorted(set(log_kinds) - set(_KINDS))
        if unknown:
            raise ValueError(f"unknown parameter kind(s) {unknown}; expected some of {_KINDS}")
        log_scaled = np.array([p.kind in log_kinds for p in PARAMETERS])
        if np.any(log_scaled & (LOWER_LIMITS <= 0)):
            raise ValueError("log scaling needs positive limits; gains cannot be log-scaled")
        return cls(LOWER_LIMITS.copy(), UPPER_LIMITS.copy(), log_scaled)

    def _to_scale(self, values: np.ndarray) -> np.ndarray:
        """Take log10 of the log-scaled columns (non-positive values give NaN)."""
        positive = values > 0
        logged = np.log10(values, out=np.full_like(values, np.nan), where=positive)
        return np.where(self.log_scaled, logged, values)

    def _scaled_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return self._to_scale(self.lower), self._to_scale(self.upper)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Map plug-in units to [0, 1] (values inside the limits land inside [0, 1])."""
        values = _as_matrix(values)
        lower, upper = self._scaled_limits()
        return (self._to_scale(values) - lower) / (upper - lower)

    def inverse_transform(self, features: np.ndarray) -> np.ndarray:
        """Map normalised features back to plug-in units."""
        features = _as_matrix(features)
        lower, upper = self._scaled_limits()
        scaled = lower + features * (upper - lower)
        # Only the log-scaled columns are exponentiated (a linear Hz column would overflow).
        mask = np.broadcast_to(self.log_scaled, scaled.shape)
        values = np.power(10.0, scaled, out=scaled.copy(), where=mask)
        # A feature inside [0, 1] maps inside the limits: 10**log10(180) is 179.99999999999997,
        # so round-off at the ends is clipped away. Features outside [0, 1] stay outside.
        inside = (features >= 0.0) & (features <= 1.0)
        return np.where(inside, np.clip(values, self.lower, self.upper), values)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able description from which :func:`normaliser_from_dict` rebuilds it."""
        return {
            "kind": self.kind,
            "columns": list(PARAMETER_NAMES),
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "log_scaled": [bool(flag) for flag in self.log_scaled],
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> MinMaxNormaliser:
        """Rebuild from :meth:`to_dict` output, checking its shape."""
        _check_columns(payload)
        lower, upper = _vector(payload, "lower"), _vector(payload, "upper")
        log_scaled = _vector(payload, "log_scaled").astype(bool)
        if np.any(upper <= lower):
            raise ValueError("normaliser limits must satisfy upper > lower in every column")
        return cls(lower, upper, log_scaled)


@dataclass(frozen=True)
class ZScoreNormaliser:
    """Per-column standardisation ``(x - mean) / std`` (Log 1's features).

    Attributes:
        mean: Column means of the data it was fitted on.
        std: Column standard deviations (population, ``ddof=0``); a constant column
            gets 1 so that it maps to 0 rather than to NaN.
    """

    mean: np.ndarray
    std: np.ndarray
    kind: ClassVar[str] = "zscore"

    @classmethod
    def fit(cls, values: np.ndarray) -> ZScoreNormaliser:
        """Fit mean and standard deviation on ``values`` (the training split only)."""
        values = _as_matrix(values)
        if values.shape[0] < 2:
            raise ValueError(
                f"a z-score normaliser needs at least 2 rows to fit, got {values.shape[0]}"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError("cannot fit a z-score normaliser on NaN or infinite values")
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Standardise plug-in units."""
        return (_as_matrix(values) - self.mean) / self.std

    def inverse_transform(self, features: np.ndarray) -> np.ndarray:
        """Map standardised features back to plug-in units."""
        return _as_matrix(features) * self.std + self.mean

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able description from which :func:`normaliser_from_dict` rebuilds it."""
        return {
            "kind": self.kind,
            "columns": list(PARAMETER_NAMES),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ZScoreNormaliser:
        """Rebuild from :meth:`to_dict` output, checking its shape."""
        _check_columns(payload)
        std = _vector(payload, "std")
        if np.any(std <= 0):
            raise ValueError("normaliser field 'std' must be positive in every column")
        return cls(_vector(payload, "mean"), std)


@dataclass(frozen=True)
class IdentityNormaliser:
    """Values already in plug-in units: ``transform`` and its inverse change nothing.

    Describes the output of a decoder that produces dB / Hz / Q directly (Log 1 trained
    with its loss in consistent units).
    """

    kind: ClassVar[str] = "identity"

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Return the values (checked for shape)."""
        return _as_matrix(values).copy()

    def inverse_transform(self, features: np.ndarray) -> np.ndarray:
        """Return the values (checked for shape)."""
        return _as_matrix(features).copy()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able description from which :func:`normaliser_from_dict` rebuilds it."""
        return {"kind": self.kind, "columns": list(PARAMETER_NAMES)}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> IdentityNormaliser:
        """Rebuild from :meth:`to_dict` output, checking its columns."""
        _check_columns(payload)
        return cls()


Normaliser = MinMaxNormaliser | ZScoreNormaliser | IdentityNormaliser
_BY_KIND: dict[str, type[Normaliser]] = {
    MinMaxNormaliser.kind: MinMaxNormaliser,
    ZScoreNormaliser.kind: ZScoreNormaliser,
    IdentityNormaliser.kind: IdentityNormaliser,
}


def normaliser_from_dict(payload: Mapping[str, Any]) -> Normaliser:
    """Rebuild a normaliser from its JSON description (the output of ``to_dict``)."""
    kind = payload.get("kind")
    if kind not in _BY_KIND:
        raise ValueError(f"unknown normaliser kind {kind!r}; expected one of {sorted(_BY_KIND)}")
    return _BY_KIND[kind].from_dict(payload)


def build_normaliser(config: Mapping[str, Any], training_values: np.ndarray) -> Normaliser:
    """Create a normaliser from its configuration.

    Args:
        config: ``{"kind": "minmax", "log_kinds": ["freq", "q"]}`` or ``{"kind": "zscore"}``.
        training_values: The training split in plug-in units, shape ``(n, 13)``; only
            fitted normalisers (z-score) look at it.
    """
    kind = config.get("kind")
    if kind == MinMaxNormaliser.kind:
        return MinMaxNormaliser.from_plugin_limits(config.get("log_kinds", ("freq", "q")))
    if kind == ZScoreNormaliser.kind:
        return ZScoreNormaliser.fit(training_values)
    raise ValueError(f"unknown normaliser kind {kind!r}; expected one of {sorted(_BY_KIND)}")
