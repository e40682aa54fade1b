"""Magnitude response of the SAFE five-band EQ (docs/design.md section 7), vectorised with numpy.

Five biquads in series at ``fs`` = 44,100 Hz, from the RBJ "Audio EQ Cookbook" (the forms
JUCE's IIR filters use): a low shelf, three peaking bands and a high shelf. With
``A = 10**(gain_db / 40)``, ``w0 = 2·pi·f0 / fs`` and ``alpha = sin(w0) / (2·Q)``; both
shelves use the plug-in's fixed Q of 0.71. The combined response in dB is the sum of the
bands' responses in dB.
"""

from __future__ import annotations

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


def frequency_grid(
    n_points: int = N_POINTS, f_min: float = F_MIN, f_max: float = F_MAX
) -> np.ndarray:
    """Log-spaced frequencies in Hz from ``f_min`` to ``f_max`` (both included)."""
    if n_points < 2 or not 0 < f_min < f_max:
        raise ValueError(
            f"need n_points >= 2 and 0 < f_min < f_max, got {n_points}, {f_min}, {f_max}"
        )
    return np.geomspace(f_min, f_max, n_points)


def _column(settings: np.ndarray, name: str) -> np.ndarray:
    return settings[:, _INDEX[name]]


def peaking_coefficients(
    gain_db: np.ndarray, freq_hz: np.ndarray, q: np.ndarray, fs: float = SAMPLE_RATE
) -> np.ndarray:
    """RBJ peaking-EQ biquads, shape ``(n, 6)`` as ``b0, b1, b2, a0, a1, a2``."""
    a = 10.0 ** (np.asarray(gain_db, dtype=np.float64) / 40.0)
    w0 = 2.0 * np.pi * np.asarray(freq_hz, dtype=np.float64) / fs
    alpha = np.sin(w0) / (2.0 * np.asarray(q, dtype=np.float64))
    cos = np.cos(w0)
    return np.stack(
        [1 + alpha * a, -2 * cos, 1 - alpha * a, 1 + alpha / a, -2 * cos, 1 - alpha / a],
        axis=-1,
    )


def shelf_coefficients(
    gain_db: np.ndarray,
    freq_hz: np.ndarray,
    high: bool,
    q: float = SHELF_Q,
    fs: float = SAMPLE_RATE,
) -> np.ndarray:
    """RBJ low- or high-shelf biquads, shape ``(n, 6)`` as ``b0, b1, b2, a0, a1, a2``."""
    a = 10.0 ** (np.asarray(gain_db, dtype=np.float64) / 40.0)
    w0 = 2.0 * np.pi * np.asarray(freq_hz, dtype=np.float64) / fs
    alpha = np.sin(w0) / (2.0 * q)
    cos = np.cos(w0)
    root = 2.0 * np.sqrt(a) * alpha
    sign = -1.0 if high else 1.0  # the high shelf is the low shelf with cos(w0) negated
    ap1, am1 = a + 1.0, a - 1.0
    return np.stack(
        [
            a * (ap1 - sign * am1 * cos + root),
            sign * 2 * a * (am1 - sign * ap1 * cos),
            a * (ap1 - sign * am1 * cos - root),
            ap1 + sign * am1 * cos + root,
            -sign * 2 * (am1 + sign * ap1 * cos),
            ap1 + sign * am1 * cos - root,
        ],
        axis=-1,
    )


def biquad_coefficients(settings: np.ndarray, fs: float = SAMPLE_RATE) -> np.ndarray:
    """Coefficients of the five bands for a batch of settings.

    Args:
        settings: ``(n, 13)`` in plug-in units (dB, Hz, Q), file column order.
        fs: Sample rate in Hz.

    Returns:
        Array ``(n, 5, 6)``: per band (low shelf, peaks 1 to 3, high shelf)
        ``b0, b1, b2, a0, a1, a2``.
    """
    settings = np.asarray(settings, dtype=np.float64)
    if settings.ndim != 2 or settings.shape[1] != N_PARAMETERS:
        raise ValueError(
            f"expected settings of shape (n, {N_PARAMETERS}) in plug-in units, got {settings.shape}"
        )
    bands = [
        shelf_coefficients(
            _column(settings, "low_shelf_gain_db"),
            _column(settings, "low_shelf_freq_hz"),
            high=False,
            fs=fs,
        )
    ]
    bands += [
        peaking_coefficients(
            _column(settings, f"{peak}_gain_db"),
            _column(settings, f"{peak}_freq_hz"),
            _column(settings, f"{peak}_q"),
            fs=fs,
        )
        for peak in _PEAKS
    ]
    bands.append(
        shelf_coefficients(
            _column(settings, "high_shelf_gain_db"),
            _column(settings, "high_shelf_freq_hz"),
            high=True,
            fs=fs,
        )
    )
    return np.stack(bands, axis=1)


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
