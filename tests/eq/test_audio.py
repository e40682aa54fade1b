"""Applying a setting to audio: the filters match the response model, files are safe."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import soundfile

from neural_eq_morphing.eq.audio import (
    AudioError,
    LoudnessMeter,
    StreamingFilter,
    check_setting,
    fit_to_sample_rate,
    render_file,
    scale_gains,
    second_order_sections,
)
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETER_NAMES, UPPER_LIMITS
from neural_eq_morphing.eq.response import response_db

RATES = (44_100, 48_000)


def random_presets(seed: int, n: int) -> np.ndarray:
    """Valid settings drawn uniformly (frequencies and Q log-uniformly) within the limits."""
    rng = np.random.default_rng(seed)
    log = np.array(["freq" in name or name.endswith("_q") for name in PARAMETER_NAMES])
    low = np.where(log, np.log10(np.where(log, LOWER_LIMITS, 1.0)), LOWER_LIMITS)
    high = np.where(log, np.log10(np.where(log, UPPER_LIMITS, 1.0)), UPPER_LIMITS)
    draws = rng.uniform(low, high, size=(n, len(PARAMETER_NAMES)))
    return np.where(log, 10.0**draws, draws)


def _in_blocks(values: np.ndarray, sos: np.ndarray, block: int = 10_007) -> np.ndarray:
    equaliser = StreamingFilter(sos, values.shape[1])
    return np.concatenate([equaliser(values[i : i + block]) for i in range(0, len(values), block)])


def _audible(frequencies: np.ndarray) -> np.ndarray:
    return (frequencies >= 20.0) & (frequencies <= 20_000.0)


@pytest.mark.parametrize("rate", RATES)
def test_the_impulse_response_is_the_response_model(rate):
    impulse = np.zeros((1 << 18, 1))
    impulse[0] = 1.0
    for setting in random_presets(seed=rate, n=12):
        fitted, moved = fit_to_sample_rate(setting, rate)
        assert moved == []  # nothing moves at 44.1 kHz and above
        measured = _in_blocks(impulse, second_order_sections(fitted, rate))[:, 0]
        spectrum = np.fft.rfft(measured)
        frequencies = np.fft.rfftfreq(len(measured), 1 / rate)
        keep = _audible(frequencies)
        measured_db = 20 * np.log10(np.abs(spectrum[keep]))
        model_db = response_db(fitted, frequencies[keep], fs=rate)
        assert np.abs(measured_db - model_db).max() < 0.05, setting


@pytest.mark.parametrize("rate", RATES)
def test_filtered_white_noise_has_the_response_models_magnitude(rate):
    # Periodic white noise (one period played twice): once the filters have settled, the
    # second period of the output is the circular convolution of the noise with the
    # impulse response, so the ratio of the two spectra is the filter's response exactly.
    period = 1 << 18
    noise = np.random.default_rng(rate).standard_normal((period, 1))
    frequencies = np.fft.rfftfreq(period, 1 / rate)
    keep = _audible(frequencies)
    for setting in random_presets(seed=rate + 1, n=6):
        output = _in_blocks(np.tile(noise, (2, 1)), second_order_sections(setting, rate))
        ratio = np.fft.rfft(output[period:, 0]) / np.fft.rfft(noise[:, 0])
        measured_db = 20 * np.log10(np.abs(ratio[keep]))
        model_db = response_db(setting, frequencies[keep], fs=rate)
        assert np.abs(measured_db - model_db).max() < 0.05, setting


def test_low_sample_rates_move_band_frequencies_below_nyquist():
    setting = random_presets(seed=3, n=1)[0]
    setting[PARAMETER_NAMES.index("high_shelf_freq_hz")] = 16_000.0
    fitted, moved = fit_to_sample_rate(setting, 8_000)
    assert "high_shelf_freq_hz 16000 Hz → 3600 Hz" in moved
    assert fitted.max() <= 3600.0
    sections = second_order_sections(fitted, 8_000)
    assert np.isfinite(sections).all()
    assert np.all(np.abs(np.roots(sections[-1, 3:])) < 1)  # still a stable filter


def test_amount_scales_the_gains_and_negative_inverts_them():
    setting = random_presets(seed=4, n=1)[0]
    gains = [i for i, name in enumerate(PARAMETER_NAMES) if name.endswith("_gain_db")]
    others = [i for i in range(len(PARAMETER_NAMES)) if i not in gains]
    half = scale_gains(setting, 0.5)
    np.testing.assert_allclose(half[gains], setting[gains] * 0.5)
    np.testing.assert_array_equal(half[others], setting[others])
    np.testing.assert_allclose(scale_gains(setting, -1.0)[gains], -setting[gains])
    assert np.abs(scale_gains(setting, 10.0)[gains]).max() <= 12.0


def test_a_setting_outside_the_limits_is_refused():
    setting = random_presets(seed=5, n=1)[0]
    setting[0] = 40.0
    with pytest.raises(ValueError, match="low_shelf_gain_db=40 outside"):
        check_setting(setting)
    with pytest.raises(ValueError, match="expected 13 finite parameters"):
        check_setting(setting[:5])


def test_the_streaming_loudness_meter_agrees_with_pyloudnorm():
    rate = 48_000
    rng = np.random.default_rng(0)
    seconds = 12
    level = np.repeat(rng.uniform(0.01, 0.5, size=seconds), rate)[:, None]
    signal = rng.standard_normal((seconds * rate, 2)) * level
    signal[3 * rate : 5 * rate] *= 1e-5  # a quiet passage the gates drop
    meter = LoudnessMeter(rate, 2)
    for start in range(0, len(signal), 7_777):
        meter.add(signal[start : start + 7_777])
    reference = pyloudnorm.Meter(rate).integrated_loudness(signal)
    assert meter.integrated() == pytest.approx(reference, abs=0.01)


def _write(path, frames=48_000, channels=2, rate=48_000, subtype=None, seed=0):
    rng = np.random.default_rng(seed)
    data = 0.02 * rng.standard_normal((frames, channels))  # no clipping after +12 dB
    soundfile.write(path, data, rate, subtype=subtype)
    return data


@pytest.mark.parametrize(
    ("name", "channels", "rate"),
    [("in.wav", 1, 44_100), ("in.flac", 2, 48_000), ("in.ogg", 3, 22_050)],
)
def test_render_file_writes_the_filtered_audio(tmp_path, name, channels, rate):
    source = tmp_path / name
    data = _write(source, frames=rate, channels=channels, rate=rate)
    setting = random_presets(seed=6, n=1)[0]
    target = tmp_path / f"out{source.suffix}"
    seen = []
    report = render_file(
        source, target, setting, block_frames=4_096, progress=lambda d, t: seen.append((d, t))
    )
    written, written_rate = soundfile.read(target, always_2d=True)
    assert written_rate == rate
    assert written.shape == data.shape
    assert (report.frames, report.channels, report.sample_rate) == (rate, channels, rate)
    assert seen[-1] == (rate, rate)
    if source.suffix != ".ogg":  # lossless: the samples are the filter's output
        decoded, _ = soundfile.read(source, always_2d=True)
        fitted, _ = fit_to_sample_rate(setting, rate)
        expected = _in_blocks(decoded, second_order_sections(fitted, rate))
        np.testing.assert_allclose(written, expected, atol=2e-4)
        assert report.peak_dbfs == pytest.approx(20 * np.log10(np.abs(written).max()), abs=0.1)
    # At 22.05 kHz, frequencies above 0.45 × 22,050 Hz are moved, and the report says so.
    assert report.moved == fit_to_sample_rate(setting, rate)[1]
    assert bool(report.moved) == bool(setting.max() > 0.45 * rate)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_loudness_matching_brings_the_output_to_the_inputs_loudness(tmp_path):
    source = tmp_path / "in.wav"
    _write(source, frames=5 * 48_000, subtype="FLOAT")
    setting = random_presets(seed=7, n=1)[0]
    setting[[i for i, n in enumerate(PARAMETER_NAMES) if n.endswith("_gain_db")]] = 9.0
    report = render_file(source, tmp_path / "out.wav", setting, match_loudness=True)
    assert abs(report.gain_db) > 3  # the boost was compensated
    assert report.output_lufs == pytest.approx(report.input_lufs, abs=0.05)
    written, rate = soundfile.read(tmp_path / "out.wav")
    assert pyloudnorm.Meter(rate).integrated_loudness(written) == pytest.approx(
        report.input_lufs, abs=0.05
    )


def test_clipping_is_counted(tmp_path):
    source = tmp_path / "in.wav"
    _write(source, subtype="FLOAT")
    loud = check_setting(
        np.where(
            np.char.endswith(np.array(PARAMETER_NAMES), "_gain_db"), 12.0, random_presets(8, 1)[0]
        )
    )
    data = 0.9 * np.ones((48_000, 1))
    soundfile.write(source, data, 48_000, subtype="FLOAT")
    report = render_file(source, tmp_path / "out.wav", loud, overwrite=True)
    assert report.clipped_samples > 0
    assert report.peak_dbfs > 0


@pytest.mark.parametrize(
    ("make", "output", "message"),
    [
        (lambda p: p.write_bytes(b"not audio at all" * 100), "out.wav", "cannot be read as audio"),
        (lambda p: None, "out.wav", "no audio file at"),
        (_write, "out.mp4", "not an audio format soundfile writes"),
        (_write, "in.wav", "is the input file"),
    ],
    ids=["not audio", "missing", "unsupported output", "output is the input"],
)
def test_bad_input_is_refused_and_leaves_nothing(tmp_path, make, output, message):
    source = tmp_path / "in.wav"
    make(source)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(AudioError, match=message):
        render_file(source, tmp_path / output, random_presets(9, 1)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_existing_output_is_kept_unless_overwrite(tmp_path):
    source = tmp_path / "in.wav"
    _write(source)
    target = tmp_path / "out.wav"
    target.write_bytes(b"keep me")
    with pytest.raises(AudioError, match="exists"):
        render_file(source, target, random_presets(10, 1)[0])
    assert target.read_bytes() == b"keep me"
    render_file(source, target, random_presets(10, 1)[0], overwrite=True)
    assert soundfile.info(target).frames == 48_000
