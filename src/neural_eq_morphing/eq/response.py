"""Magnitude response of the SAFE five-band EQ (docs/design.md section 7), vectorised with numpy.

Five biquads in series at ``fs`` = :data:`SAMPLE_RATE` (44,100 Hz), from the RBJ "Audio EQ
Cookbook" (the forms JUCE's IIR filters use): a low shelf, three peaking bands and a high
shelf. With ``A = 10**(gain_db / 40)``, ``w0 = 2·pi·f0 / fs`` and ``alpha = sin(w0) / (2·Q)``;
both shelves use the plug-in's fixed Q, :data:`~neural_eq_morphing.eq.parameters.SHELF_Q`
(0.71). The combined response in dB is the sum of the bands' responses in dB.

The coefficient formulas (:func:`peaking_coefficients`, :func:`shelf_coefficients`,
:func:`biquad_coefficients`) are the only ones in the project: they take the array module
``xp`` (numpy by default), so the same code gives this module's response, the audio
renderer's filters (:func:`neural_eq_morphing.eq.audio.second_order_sections`) and, with
``xp=torch``, the differentiable perceptual loss
(:mod:`neural_eq_morphing.models.perceptual`). This module never imports torch.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import TypeVar

import numpy as np

from neural_eq_morphing.eq.parameters import (
    LOWER_LIMITS,
    N_PARAMETERS,
    PARAMETER_NAMES,
    SHELF_Q,
    UPPER_LIMITS,
)

SAMPLE_RATE = 44_100.0
N_POINTS = 256
F_MIN = 20.0
F_MAX = 20_000.0

_INDEX = {name: i for i, name in enumerate(PARAMETER_NAMES)}
_PEAKS = ("peak1", "peak2", "peak3")
#: A numpy array or a torch tensor (this module does not import torch).
_Array = TypeVar("_Array")


def frequency_grid(
    n_points: int = N_POINTS, f_min: float = F_MIN, f_max: float = F_MAX
) -> np.ndarray:
    """Log-spaced frequencies in Hz from ``f_min`` to ``f_max`` (both included)."""
    if n_points < 2 or not 0 < f_min < f_max:
        raise ValueError(
            f"need n_points >= 2 and 0 < f_min < f_max, got {n_points}, {f_min}, {f_max}"
        )
    return np.geomspace(f_min, f_max, n_points)


def _stack(xp: ModuleType, arrays: list[_Array], axis: int) -> _Array:
    """``xp.stack`` along ``axis``, passed by position: numpy calls it ``axis``, torch ``dim``."""
    return xp.stack(arrays, axis)


def peaking_coefficients(
    gain_db: _Array,
    freq_hz: _Array,
    q: _Array,
    fs: float = SAMPLE_RATE,
    *,
    xp: ModuleType = np,
) -> _Array:
    """RBJ peaking-EQ biquads, shape ``(..., 6)`` as ``b0, b1, b2, a0, a1, a2``.

    Args:
        gain_db: Gains in dB, arrays of ``xp`` (all three of the same shape).
        freq_hz: Centre frequencies in Hz.
        q: Quality factors.
        fs: Sample rate in Hz.
        xp: The array module of the arguments (numpy or torch); the result is one of its
            arrays, computed with its operations only (so torch autograd flows through).
    """
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq_hz / fs
    alpha = xp.sin(w0) / (2.0 * q)
    cos = xp.cos(w0)
    return _stack(
        xp,
        [1 + alpha * a, -2 * cos, 1 - alpha * a, 1 + alpha / a, -2 * cos, 1 - alpha / a],
        -1,
    )


def shelf_coefficients(
    gain_db: _Array,
    freq_hz: _Array,
    high: bool,
    q: float = SHELF_Q,
    fs: float = SAMPLE_RATE,
    *,
    xp: ModuleType = np,
) -> _Array:
    """RBJ low- or high-shelf biquads, shape ``(..., 6)`` as ``b0, b1, b2, a0, a1, a2``.

    Arguments as :func:`peaking_coefficients`; ``high`` picks the high shelf and ``q`` is
    the plug-in's fixed shelf Q unless given.
    """
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * freq_hz / fs
    alpha = xp.sin(w0) / (2.0 * q)
    cos = xp.cos(w0)
    root = 2.0 * xp.sqrt(a) * alpha
    sign = -1.0 if high else 1.0  # the high shelf is the low shelf with cos(w0) negated
    ap1, am1 = a + 1.0, a - 1.0
    return _stack(
        xp,
        [
            a * (ap1 - sign * am1 * cos + root),
            sign * 2 * a * (am1 - sign * ap1 * cos),
            a * (ap1 - sign * am1 * cos - root),
            ap1 + sign * am1 * cos + root,
            -sign * 2 * (am1 + sign * ap1 * cos),
            ap1 + sign * am1 * cos - root,
        ],
        -1,
    )


def biquad_coefficients(
    settings: _Array, fs: float = SAMPLE_RATE, *, xp: ModuleType = np
) -> _Array:
    """Coefficients of the five bands for a batch of settings.

    Args:
        settings: ``(n, 13)`` in plug-in units (dB, Hz, Q), file column order; any leading
            dimensions ``(..., 13)`` work too. With numpy anything array-like, taken as
            float64; with ``xp=torch`` a tensor, used as it is (pass float64: the
            perceptual loss does).
        fs: Sample rate in Hz.
        xp: The array module, numpy (default) or torch.

    Returns:
        Array ``(n, 5, 6)`` of ``xp`` (``(..., 5, 6)``): per band (low shelf, peaks 1 to 3,
        high shelf) ``b0, b1, b2, a0, a1, a2``.
    """
    if xp is np:
        settings = np.asarray(settings, dtype=np.float64)
    if settings.ndim < 1 or settings.shape[-1] != N_PARAMETERS:
        raise ValueError(
            f"expected settings of shape (n, {N_PARAMETERS}) in plug-in units, "
            f"got {tuple(settings.shape)}"
        )

    def column(name: str) -> _Array:
        return settings[..., _INDEX[name]]

    bands = [
        shelf_coefficients(
            column("low_shelf_gain_db"), column("low_shelf_freq_hz"), high=False, fs=fs, xp=xp
        )
    ]
    bands += [
        peaking_coefficients(
            column(f"{peak}_gain_db"),
            column(f"{peak}_freq_hz"),
            column(f"{peak}_q"),
            fs=fs,
            xp=xp,
        )
        for peak in _PEAKS
    ]
    bands.append(
        shelf_coefficients(
            column("high_shelf_gain_db"), column("high_shelf_freq_hz"), high=True, fs=fs, xp=xp
        )
    )
    return _stack(xp, bands, -2)


def biquad_response_db(
    coefficients: np.ndarray, frequencies: np.ndarray, fs: float = SAMPLE_RATE
) -> np.ndarray:
    """Magnitude in dB of biquads ``(..., 6)`` at ``frequencies`` (Hz): ``(..., n_freq)``."""
    omega = 2.0 * np.pi * np.asarray(frequencies, dtype=np.float64) / fs
    z1 = np.exp(-1j * omega)
    z2 = z1 * z1
    c = np.asarray(coefficients)[..., None, :]
    numerator = c[..., 0] + c[..., 1] * z1 + c[..., 2] * z2
    denominator = c[..., 3] + c[..., 4] * z1 + c[..., 5] * z2
    return 20.0 * np.log10(np.abs(numerator) / np.abs(denominator))


def response_db(
    settings: np.ndarray,
    frequencies: np.ndarray | None = None,
    fs: float = SAMPLE_RATE,
) -> np.ndarray:
    """Combined magnitude response in dB of a batch of EQ settings.

    Args:
        settings: ``(n, 13)`` in plug-in units, or a single setting ``(13,)``.
        frequencies: Evaluation frequencies in Hz; default :func:`frequency_grid`.
        fs: Sample rate in Hz.

    Returns:
        ``(n, n_freq)`` (or ``(n_freq,)`` for a single setting): the sum over the five
        bands of each band's response in dB.
    """
    settings = np.asarray(settings, dtype=np.float64)
    single = settings.ndim == 1
    frequencies = frequency_grid() if frequencies is None else frequencies
    per_band = biquad_response_db(biquad_coefficients(np.atleast_2d(settings), fs), frequencies, fs)
    total = per_band.sum(axis=1)
    return total[0] if single else total


def clamped_response_db(
    settings: np.ndarray,
    n_points: int = N_POINTS,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
    fs: float = SAMPLE_RATE,
) -> np.ndarray:
    """Responses of settings clamped to the plug-in limits, on a log-spaced grid.

    The plug-in cannot go past its limits, so out-of-range (or NaN, taken as 0) values of
    a decoded setting are clamped before the response is computed; how many were out of
    range is for :mod:`neural_eq_morphing.eq.validity` to report.
    """
    clamped = np.clip(np.nan_to_num(settings, nan=0.0), LOWER_LIMITS, UPPER_LIMITS)
    return response_db(clamped, frequency_grid(int(n_points), f_min, f_max), fs)
