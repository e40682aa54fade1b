"""The SAFE equaliser's 13 parameters: names, kinds, bands and plug-in limits.

This is the single source of the parameter layout (docs/design.md section 3). Everything that
needs a column order, a band or a limit reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

ParameterKind = Literal["gain", "freq", "q"]

#: Fixed Q of both shelving filters in the SAFE plug-in.
SHELF_Q = 0.71


@dataclass(frozen=True)
class ParameterSpec:
    """One EQ parameter: its column name, band, kind and plug-in limits."""

    name: str
    band: str
    kind: ParameterKind
    minimum: float
    maximum: float
    unit: str


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("low_shelf_gain_db", "low_shelf", "gain", -12.0, 12.0, "dB"),
    ParameterSpec("low_shelf_freq_hz", "low_shelf", "freq", 22.0, 1000.0, "Hz"),
    ParameterSpec("peak1_gain_db", "peak1", "gain", -12.0, 12.0, "dB"),
    ParameterSpec("peak1_freq_hz", "peak1", "freq", 82.0, 3900.0, "Hz"),
    ParameterSpec("peak1_q", "peak1", "q", 0.1, 10.0, ""),
    ParameterSpec("peak2_gain_db", "peak2", "gain", -12.0, 12.0, "dB"),
    ParameterSpec("peak2_freq_hz", "peak2", "freq", 180.0, 4700.0, "Hz"),
    ParameterSpec("peak2_q", "peak2", "q", 0.1, 10.0, ""),
    ParameterSpec("peak3_gain_db", "peak3", "gain", -12.0, 12.0, "dB"),
    ParameterSpec("peak3_freq_hz", "peak3", "freq", 220.0, 10000.0, "Hz"),
    ParameterSpec("peak3_q", "peak3", "q", 0.1, 10.0, ""),
    ParameterSpec("high_shelf_gain_db", "high_shelf", "gain", -12.0, 12.0, "dB"),
    ParameterSpec("high_shelf_freq_hz", "high_shelf", "freq", 580.0, 20000.0, "Hz"),
)

#: Column names of the 13 parameters, in SAFE-DB file order.
PARAMETER_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMETERS)
N_PARAMETERS = len(PARAMETERS)
#: Band names in file order.
BANDS: tuple[str, ...] = tuple(dict.fromkeys(p.band for p in PARAMETERS))

#: Plug-in limits as arrays aligned with ``PARAMETER_NAMES``.
LOWER_LIMITS = np.array([p.minimum for p in PARAMETERS], dtype=np.float64)
UPPER_LIMITS = np.array([p.maximum for p in PARAMETERS], dtype=np.float64)


def indices_of_kind(kind: ParameterKind) -> list[int]:
    """Return the column indices of all parameters of one kind (gain, freq or q)."""
    return [i for i, p in enumerate(PARAMETERS) if p.kind == kind]


def out_of_range_mask(values: np.ndarray, rel_tol: float = 0.0) -> np.ndarray:
    """Return a boolean mask of entries outside the plug-in limits.

    Args:
        values: Array of shape ``(n, 13)`` in plug-in units (dB, Hz, Q).
        rel_tol: Relative slack allowed beyond each limit (for float32 round-off).

    Returns:
        Boolean array of the same shape; ``True`` where a value lies outside its
        limits or is not finite.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != N_PARAMETERS:
        raise ValueError(
            f"expected an array of shape (n, {N_PARAMETERS}) in plug-in units, "
            f"got shape {values.shape}"
        )
    lower = LOWER_LIMITS - rel_tol * np.abs(LOWER_LIMITS)
    upper = UPPER_LIMITS + rel_tol * np.abs(UPPER_LIMITS)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (values < lower) | (values > upper)
