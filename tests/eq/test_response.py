import numpy as np
import pytest
from scipy.signal import sosfreqz

from neural_eq_morphing.eq.parameters import PARAMETER_NAMES, SHELF_Q
from neural_eq_morphing.eq.response import (
    SAMPLE_RATE,
    biquad_coefficients,
    frequency_grid,
    response_db,
)
from tests.conftest import random_settings

INDEX = {name: i for i, name in enumerate(PARAMETER_NAMES)}
NYQUIST = SAMPLE_RATE / 2


def flat(**values: float) -> np.ndarray:
    """A setting with every gain at 0 dB and mid-range frequencies, then ``values``."""
    setting = np.array([0, 100, 0, 500, 1, 0, 1000, 1, 0, 3000, 1, 0, 8000], dtype=np.float64)
    for name, value in values.items():
        setting[INDEX[name]] = value
    return setting


def test_grid_is_log_spaced_from_20_hz_to_20_khz():
    grid = frequency_grid()
    assert grid.shape == (256,)
    assert grid[0] == pytest.approx(20.0)
    assert grid[-1] == pytest.approx(20_000.0)
    np.testing.assert_allclose(np.diff(np.log(grid)), np.log(1000) / 255)


def test_zero_gains_give_zero_db_everywhere():
    settings = random_settings(np.random.default_rng(0), 50)
    settings[:, [INDEX[n] for n in PARAMETER_NAMES if n.endswith("gain_db")]] = 0.0
    np.testing.assert_allclose(response_db(settings), 0.0, atol=1e-9)


@pytest.mark.parametrize("peak", ["peak1", "peak2", "peak3"])
@pytest.mark.parametrize(("gain", "freq", "q"), [(9.0, 400.0, 0.7), (-12.0, 2500.0, 8.0)])
def test_peak_reaches_exactly_its_gain_at_its_centre(peak, gain, freq, q):
    setting = flat(**{f"{peak}_gain_db": gain, f"{peak}_freq_hz": freq, f"{peak}_q": q})
    assert response_db(setting, np.array([freq]))[0] == pytest.approx(gain, abs=1e-9)
    # ... and nowhere else does the band go further.
    curve = response_db(setting, np.geomspace(20, 20_000, 2000))
    assert np.max(np.abs(curve)) <= abs(gain) + 1e-9


@pytest.mark.parametrize("gain", [9.0, -6.0])
def test_low_shelf_is_its_gain_at_dc_and_flat_at_nyquist(gain):
    setting = flat(low_shelf_gain_db=gain, low_shelf_freq_hz=200.0)
    dc, nyquist = response_db(setting, np.array([1e-6, NYQUIST]))
    assert dc == pytest.approx(gain, abs=1e-6)
    assert nyquist == pytest.approx(0.0, abs=1e-6)
    low, high = response_db(setting, np.array([20.0, 20_000.0]))
    assert low == pytest.approx(gain, abs=0.1)  # far into the shelf
    assert high == pytest.approx(0.0, abs=0.01)  # far on the other side


@pytest.mark.parametrize("gain", [9.0, -6.0])
def test_high_shelf_is_its_gain_at_nyquist_and_flat_at_dc(gain):
    setting = flat(high_shelf_gain_db=gain, high_shelf_freq_hz=1000.0)
    dc, nyquist = response_db(setting, np.array([1e-6, NYQUIST]))
    assert dc == pytest.approx(0.0, abs=1e-6)
    assert nyquist == pytest.approx(gain, abs=1e-6)
    low, high = response_db(setting, np.array([20.0, 20_000.0]))
    assert low == pytest.approx(0.0, abs=0.01)
    assert high == pytest.approx(gain, abs=0.3)


def test_bands_far_apart_add_in_db():
    first = {"peak1_gain_db": 6.0, "peak1_freq_hz": 100.0, "peak1_q": 4.0}
    second = {"peak3_gain_db": -9.0, "peak3_freq_hz": 8000.0, "peak3_q": 4.0}
    setting = flat(**first, **second)
    at_peaks = response_db(setting, np.array([100.0, 8000.0]))
    np.testing.assert_allclose(at_peaks, [6.0, -9.0], atol=0.02)
    separately = response_db(flat(**first)) + response_db(flat(**second))
    np.testing.assert_allclose(response_db(setting), separately, atol=1e-9)


def test_agrees_with_scipy_sosfreqz_on_the_same_coefficients():
    settings = random_settings(np.random.default_rng(1), 20)
    grid = frequency_grid()
    ours = response_db(settings, grid)
    coefficients = biquad_coefficients(settings)
    for row, bands in zip(ours, coefficients, strict=True):
        sos = np.concatenate([bands[:, :3], bands[:, 3:]], axis=1) / bands[:, 3:4]
        _, h = sosfreqz(sos, worN=grid, fs=SAMPLE_RATE)
        np.testing.assert_allclose(row, 20 * np.log10(np.abs(h)), atol=0.01)


def test_single_setting_and_bad_shapes():
    assert response_db(flat()).shape == (256,)
    assert response_db(np.stack([flat(), flat()])).shape == (2, 256)
    with pytest.raises(ValueError, match=r"shape \(n, 13\)"):
        response_db(np.zeros((2, 12)))


def analog_db(kind: str, gain: float, f0: float, q: float, f: np.ndarray) -> np.ndarray:
    """Magnitude in dB of the RBJ analog prototypes, H(s) at s = j·f/f0 (derived by hand).

    peak:       (s² + s·A/Q + 1) / (s² + s/(A·Q) + 1)
    low shelf:  A · (s² + s·√A/Q + A) / (A·s² + s·√A/Q + 1)
    high shelf: A · (A·s² + s·√A/Q + 1) / (s² + s·√A/Q + A)
    """
    a = 10 ** (gain / 40)
    s = 1j * f / f0
    if kind == "peak":
        h = (s**2 + s * a / q + 1) / (s**2 + s / (a * q) + 1)
    elif kind == "low":
        h = a * (s**2 + s * np.sqrt(a) / q + a) / (a * s**2 + s * np.sqrt(a) / q + 1)
    else:
        h = a * (a * s**2 + s * np.sqrt(a) / q + 1) / (s**2 + s * np.sqrt(a) / q + a)
    return 20 * np.log10(np.abs(h))


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("peak", {"peak1_gain_db": 9.0, "peak1_freq_hz": 100.0, "peak1_q": 2.0}),
        ("peak", {"peak2_gain_db": -7.0, "peak2_freq_hz": 200.0, "peak2_q": 0.5}),
        ("low", {"low_shelf_gain_db": 10.0, "low_shelf_freq_hz": 100.0}),
        ("high", {"high_shelf_gain_db": -8.0, "high_shelf_freq_hz": 600.0}),
    ],
)
def test_bands_follow_their_analog_prototype_away_from_the_centre(kind, values):
    # Far below Nyquist the bilinear transform (pre-warped at f0) barely bends the
    # frequency axis, so the digital band matches the hand-derived analog magnitude; a
    # wrong Q or alpha would move the skirts by decibels.
    gain = next(v for k, v in values.items() if k.endswith("gain_db"))
    f0 = next(v for k, v in values.items() if k.endswith("freq_hz"))
    q = next((v for k, v in values.items() if k.endswith("_q")), SHELF_Q)
    others = {
        name: 0.0 for name in PARAMETER_NAMES if name.endswith("gain_db") and name not in values
    }
    setting = flat(**others, **values)
    frequencies = f0 * np.array([0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0])
    expected = analog_db(kind, gain, f0, q, frequencies)
    np.testing.assert_allclose(response_db(setting, frequencies), expected, atol=0.02)
    if kind != "peak":
        # A shelf is half its gain (in dB) at its corner frequency.
        assert response_db(setting, np.array([f0]))[0] == pytest.approx(gain / 2, abs=0.02)
