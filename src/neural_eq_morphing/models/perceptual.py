"""The perceptual loss: error on the EQ's magnitude response in dB, in torch (differentiable).

The Log 1 diagnosis asks for "frequency-weighted MSE (more weight on audible
frequencies), not just raw parameter MSE". Here a decoded setting and its target are both
turned into their magnitude responses in dB (the response model of docs/design.md section
7: five RBJ biquads at 44.1 kHz on a log-spaced grid from 20 Hz to 20 kHz), and the loss
is the weighted mean squared difference, divided by ``24²`` (the gain range in dB²) so
that it is on the scale of the normalised-space MSE: a 1 dB error everywhere costs what a
1 dB error on one gain costs there per column.

Weights: the IEC 61672 C-weighting gain at each grid frequency (as a linear amplitude),
normalised to mean 1 over the grid. The grid already spans the audible range in equal
steps per octave; C-weighting counts its extremes less (20 Hz: -6.2 dB, weight 0.49 before
normalising; 20 kHz: -11.2 dB, 0.28) and is flat in between. A-weighting, the other
standard curve, would discount the low shelf's region (-19 dB at 100 Hz), where "warm"
lives.

The decoder output is mapped to plug-in units with the inverse of Log 2's normaliser
(plug-in limits, log10 on frequencies and Q), so a design with this loss must use that
normaliser (:func:`~neural_eq_morphing.models.data.check_design_spaces`). Values are
clipped to [0, 1] first (the plug-in cannot go past its limits).

The biquad coefficients are the response model's own,
:func:`neural_eq_morphing.eq.response.biquad_coefficients` run on tensors (``xp=torch``), so
the formulas exist once and autograd flows through them. Their magnitude at ``z = e^{jω}``
is computed here, in real arithmetic, in the form that stays accurate in float32 at low
frequencies (where ``cos ω`` rounds to 1): with
``φ = sin²(ω/2)``, ``|b0 + b1 z⁻¹ + b2 z⁻²|² = (b0 + b1 + b2)² - 4(b0 b1 + 4 b0 b2 +
b1 b2) φ + 16 b0 b2 φ²``; one small matmul with the basis ``[1, φ, φ²]`` for all bands.
The grid of the loss has :data:`N_LOSS_POINTS` points (half the response model's 256, for
speed). The tests check it against :func:`neural_eq_morphing.eq.response.response_db`.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import Tensor

from neural_eq_morphing.eq.normalisers import MinMaxNormaliser
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, UPPER_LIMITS, indices_of_kind
from neural_eq_morphing.eq.response import SAMPLE_RATE, biquad_coefficients, frequency_grid

#: The gain range in dB (the perceptual loss is divided by its square).
GAIN_RANGE_DB = float(
    UPPER_LIMITS[indices_of_kind("gain")[0]] - LOWER_LIMITS[indices_of_kind("gain")[0]]
)
#: Points of the loss's log-spaced grid (1/13 octave apart: a Q-10 peak is 1/7 octave wide).
N_LOSS_POINTS = 128


def c_weighting_db(frequencies: np.ndarray) -> np.ndarray:
    """IEC 61672 C-weighting in dB at ``frequencies`` (Hz): 0 dB at 1 kHz."""
    f2 = np.asarray(frequencies, dtype=np.float64) ** 2
    gain = 12194.0**2 * f2 / ((f2 + 20.6**2) * (f2 + 12194.0**2))
    return 20.0 * np.log10(gain) + 0.06


@cache
def _grid() -> tuple[Tensor, Tensor]:
    """The basis ``[1, φ, φ²]`` ``(3, F)``, ``φ = sin²(ω/2)``, and the weights ``(F,)``."""
    frequencies = frequency_grid(N_LOSS_POINTS)
    phi = np.sin(np.pi * frequencies / SAMPLE_RATE) ** 2
    basis = np.stack([np.ones_like(phi), phi, phi * phi])
    weights = 10.0 ** (c_weighting_db(frequencies) / 20.0)
    weights /= weights.mean()
    return (
        torch.tensor(basis, dtype=torch.float64),
        torch.tensor(weights, dtype=torch.float32),
    )


@cache
def _log_space() -> tuple[Tensor, Tensor, Tensor]:
    """Log 2's normaliser as tensors: scaled lower and upper limits, log-scaled mask."""
    normaliser = MinMaxNormaliser.from_plugin_limits(("freq", "q"))
    logged = normaliser.log_scaled
    lower = np.where(logged, np.log10(np.abs(normaliser.lower)), normaliser.lower)
    upper = np.where(logged, np.log10(np.abs(normaliser.upper)), normaliser.upper)
    return (
        torch.tensor(lower, dtype=torch.float32),
        torch.tensor(upper, dtype=torch.float32),
        torch.tensor(logged),
    )


def plugin_units(features: Tensor) -> Tensor:
    """Log 2's normaliser inverse in torch: normalised ``(..., 13)`` to dB / Hz / Q.

    Features are clipped to [0, 1] first, so the result lies inside the plug-in limits.
    """
    lower, upper, logged = _log_space()
    scaled = lower + features.clamp(0.0, 1.0) * (upper - lower)
    return torch.where(logged, torch.pow(10.0, scaled), scaled)


def _quadratic_form(c: Tensor) -> Tensor:
    """``(..., 3)`` biquad coefficients to the ``[1, φ, φ²]`` weights of ``|c(e^{jω})|²``."""
    c0, c1, c2 = c.unbind(-1)
    total = c0 + c1 + c2
    return torch.stack(
        [total * total, -4.0 * (c0 * c1 + 4.0 * c0 * c2 + c1 * c2), 16.0 * c0 * c2], -1
    )


def response_db(settings: Tensor) -> Tensor:
    """Magnitude response in dB ``(..., F)`` of settings ``(..., 13)`` in plug-in units.

    The same response as :func:`neural_eq_morphing.eq.response.response_db` on
    ``frequency_grid(N_LOSS_POINTS)``, differentiable. Computed in float64 (the shelves'
    coefficient sums cancel to a few 1e-4 at low frequencies), returned in the settings'
    dtype.
    """
    basis, _ = _grid()
    coefficients = biquad_coefficients(settings.double(), xp=torch)  # (..., 5, 6)
    numerator, denominator = coefficients[..., :3], coefficients[..., 3:]
    # (..., 5, F) each; products of the bands' |H|² (positive: no band has a zero on the
    # unit circle at these gains), then one log.
    top = torch.ones((), dtype=basis.dtype)
    for band in (_quadratic_form(numerator) @ basis).unbind(-2):
        top = top * band
    bottom = torch.ones((), dtype=basis.dtype)
    for band in (_quadratic_form(denominator) @ basis).unbind(-2):
        bottom = bottom * band
    return (10.0 * torch.log10(top / bottom)).to(settings.dtype)


def perceptual_loss(reconstruction: Tensor, target: Tensor) -> Tensor:
    """C-weighted mean squared dB response error over ``24²``, per batch ``(...)``.

    Args:
        reconstruction: Decoder output in Log 2's normalised space, ``(..., batch, 13)``.
        target: The normalised target features, same shape (no gradient flows to it).

    Returns:
        The mean over rows and grid points, of shape ``reconstruction.shape[:-2]``.
    """
    return perceptual_loss_per_row(reconstruction, target).mean(-1)


def perceptual_loss_per_row(reconstruction: Tensor, target: Tensor) -> Tensor:
    """:func:`perceptual_loss` of each row, ``(..., batch)``."""
    _, weights = _grid()
    with torch.no_grad():
        wanted = response_db(plugin_units(target))
    error = (response_db(plugin_units(reconstruction)) - wanted).square()
    return (error * weights).mean(-1) / GAIN_RANGE_DB**2
