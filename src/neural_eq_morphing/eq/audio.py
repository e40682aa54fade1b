"""Apply an EQ setting to audio: the response model's five biquads as audio filters.

The filters are exactly the biquads of :mod:`neural_eq_morphing.eq.response` (RBJ
cookbook, as the SAFE plug-in), run as second-order sections with ``scipy.signal.sosfilt``
in float64, block by block with the filter state carried over, so a file of any length
runs in bounded memory. Files are read and written with ``soundfile`` (WAV, FLAC, OGG, …;
any channel count and sample rate). Loudness is ITU-R BS.1770-4 integrated loudness,
measured block by block with ``pyloudnorm``'s K-weighting filters and the standard's
gating, so that it too needs no whole-file buffer.

Knows nothing of Kedro or of the model: a setting is 13 numbers in plug-in units.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
from pyloudnorm.iirfilter import IIRfilter
from scipy.signal import sosfilt

from neural_eq_morphing.eq.parameters import (
    LOWER_LIMITS,
    N_PARAMETERS,
    PARAMETER_NAMES,
    UPPER_LIMITS,
    indices_of_kind,
)
from neural_eq_morphing.eq.response import biquad_coefficients
from neural_eq_morphing.errors import UserError

#: Band frequencies are kept at or below this fraction of the sample rate (0.9 × Nyquist):
#: a biquad tuned at or past Nyquist is no longer the band the setting describes.
MAX_FREQUENCY_FRACTION = 0.45
#: Frames read, filtered and written at a time.
BLOCK_FRAMES = 65_536

_FREQUENCIES = indices_of_kind("freq")
_GAINS = indices_of_kind("gain")
# BS.1770-4: 400 ms gating blocks with 75 % overlap (a 100 ms step), gates at -70 LUFS and
# 10 LU below the ungated mean; channel weights 1, 1, 1, 1.41, 1.41 (L, R, C, Ls, Rs).
_STEP_SECONDS = 0.1
_STEPS_PER_BLOCK = 4
_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE = -10.0
_CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)


class AudioError(UserError, ValueError):
    """An audio file cannot be read or written as asked (the message says why)."""


def check_setting(setting: np.ndarray) -> np.ndarray:
    """A setting as a float64 vector of 13 finite values inside the plug-in limits."""
    values = np.asarray(setting, dtype=np.float64).reshape(-1)
    if values.shape != (N_PARAMETERS,) or not np.isfinite(values).all():
        raise ValueError(
            f"expected {N_PARAMETERS} finite parameters in plug-in units "
            f"({', '.join(PARAMETER_NAMES)}), got {np.asarray(setting).tolist()}"
        )
    limits = zip(PARAMETER_NAMES, values, LOWER_LIMITS, UPPER_LIMITS, strict=True)
    outside = [
        f"{name}={value:g} outside [{low:g}, {high:g}]"
        for name, value, low, high in limits
        if not low <= value <= high
    ]
    if outside:
        raise ValueError("the setting is outside the plug-in limits: " + "; ".join(outside))
    return values


def scale_gains(setting: np.ndarray, amount: float) -> np.ndarray:
    """The setting with every band gain times ``amount`` (negative: the opposite curve).

    Gains are clipped to the plug-in limits (±12 dB here), so an amount above 1 saturates.
    """
    scaled = np.asarray(setting, dtype=np.float64).copy()
    scaled[_GAINS] = np.clip(scaled[_GAINS] * amount, LOWER_LIMITS[_GAINS], UPPER_LIMITS[_GAINS])
    return scaled


def fit_to_sample_rate(setting: np.ndarray, sample_rate: float) -> tuple[np.ndarray, list[str]]:
    """Keep each band's frequency at or below ``MAX_FREQUENCY_FRACTION × sample_rate``.

    Returns:
        The setting to filter with, and one note per frequency moved
        (``"high_shelf_freq_hz 16000 Hz → 9922.5 Hz"``); none at 44.1 kHz and above, as
        the plug-in's highest frequency is 20 kHz.
    """
    fitted = np.asarray(setting, dtype=np.float64).copy()
    ceiling = MAX_FREQUENCY_FRACTION * float(sample_rate)
    moved = []
    for index in _FREQUENCIES:
        if fitted[index] > ceiling:
            moved.append(f"{PARAMETER_NAMES[index]} {fitted[index]:g} Hz → {ceiling:g} Hz")
            fitted[index] = ceiling
    return fitted, moved


def second_order_sections(setting: np.ndarray, sample_rate: float) -> np.ndarray:
    """The five bands as ``scipy.signal`` second-order sections ``(5, 6)``, ``a0 = 1``."""
    coefficients = biquad_coefficients(np.asarray(setting, dtype=np.float64)[None, :], sample_rate)
    bands = coefficients[0]
    return bands / bands[:, 3:4]


class StreamingFilter:
    """Second-order sections applied block by block, the state carried between blocks.

    Args:
        sos: Sections ``(n, 6)``.
        channels: Channels of the blocks (frames × channels) to come.
    """

    def __init__(self, sos: np.ndarray, channels: int) -> None:
        self.sos = np.asarray(sos, dtype=np.float64)
        self._state = np.zeros((len(self.sos), 2, channels))

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """Filter one block ``(frames, channels)``; returns the same shape, float64."""
        filtered, self._state = sosfilt(
            self.sos, np.asarray(block, dtype=np.float64), axis=0, zi=self._state
        )
        return filtered


def _k_weighting(sample_rate: float) -> np.ndarray:
    """BS.1770's K-weighting (pyloudnorm's two filters) as second-order sections."""
    stages = (
        IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sample_rate, "high_shelf"),
        IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass"),
    )
    sections = [np.concatenate([stage.b, stage.a]) for stage in stages]
    return np.array([section / section[3] for section in sections])


class LoudnessMeter:
    """ITU-R BS.1770-4 integrated loudness, fed block by block in bounded memory.

    Keeps one sum of squares per channel and 100 ms step; :meth:`integrated` forms the
    400 ms gating blocks from them. Agrees with ``pyloudnorm.Meter.integrated_loudness``
    on whole signals (a test checks it).

    Args:
        sample_rate: In Hz.
        channels: Channels of the blocks to come (up to 5 weighted; more count as 1).
    """

    def __init__(self, sample_rate: float, channels: int) -> None:
        self._filter = StreamingFilter(_k_weighting(sample_rate), channels)
        self._step = round(_STEP_SECONDS * sample_rate)
        self._weights = np.array(
            [_CHANNEL_WEIGHTS[c] if c < len(_CHANNEL_WEIGHTS) else 1.0 for c in range(channels)]
        )
        self._steps: list[np.ndarray] = []
        self._partial = np.zeros(channels)
        self._partial_frames = 0

    def add(self, block: np.ndarray) -> None:
        """Measure one block ``(frames, channels)`` of the signal."""
        squares = np.square(self._filter(block))
        start = 0
        while start < len(squares):
            take = min(self._step - self._partial_frames, len(squares) - start)
            self._partial += squares[start : start + take].sum(axis=0)
            self._partial_frames += take
            start += take
            if self._partial_frames == self._step:
                self._steps.append(self._partial)
                self._partial = np.zeros_like(self._partial)
                self._partial_frames = 0

    def integrated(self) -> float:
        """Integrated loudness in LUFS (``-inf`` for silence or under 400 ms of signal)."""
        if len(self._steps) < _STEPS_PER_BLOCK:
            return float("-inf")
        steps = np.array(self._steps)
        window = np.lib.stride_tricks.sliding_window_view(steps, _STEPS_PER_BLOCK, axis=0)
        mean_squares = window.sum(axis=-1) / (_STEPS_PER_BLOCK * self._step)
        with np.errstate(divide="ignore"):
            loudness = -0.691 + 10 * np.log10(mean_squares @ self._weights)
        gated = mean_squares[loudness > _ABSOLUTE_GATE]
        if not len(gated):
            return float("-inf")
        relative = -0.691 + 10 * np.log10(gated.mean(axis=0) @ self._weights) + _RELATIVE_GATE
        kept = mean_squares[(loudness > relative) & (loudness > _ABSOLUTE_GATE)]
        return float(-0.691 + 10 * np.log10(kept.mean(axis=0) @ self._weights))


@dataclass
class RenderReport:
    """What :func:`render_file` did.

    Attributes:
        frames: Frames per channel processed.
        sample_rate: In Hz.
        channels: Channel count.
        seconds: Duration of the audio.
        moved: Notes on band frequencies lowered below Nyquist (:func:`fit_to_sample_rate`).
        input_lufs: Integrated loudness of the input (when measured).
        output_lufs: Integrated loudness of the output as written.
        gain_db: Gain applied after the EQ (loudness matching), 0 otherwise.
        peak_dbfs: Highest absolute sample of the output, in dBFS.
        clipped_samples: Output samples beyond full scale (clipped by integer formats).
    """

    frames: int
    sample_rate: int
    channels: int
    seconds: float
    moved: list[str] = field(default_factory=list)
    input_lufs: float | None = None
    output_lufs: float | None = None
    gain_db: float = 0.0
    peak_dbfs: float = float("-inf")
    clipped_samples: int = 0


def _open_input(path: Path) -> soundfile.SoundFile:
    if not path.is_file():
        raise AudioError(f"no audio file at '{path}'")
    try:
        return soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        formats = ", ".join(sorted(soundfile.available_formats()))
        raise AudioError(
            f"'{path}' cannot be read as audio ({error}); supported formats: {formats}"
        ) from None


def _output_format(path: Path, source: soundfile.SoundFile) -> tuple[str, str | None]:
    """The output's format from its extension, keeping the input's subtype where it fits."""
    extension = path.suffix.lstrip(".").upper()
    formats = soundfile.available_formats()
    if extension not in formats:
        raise AudioError(
            f"cannot write '{path.name}': '{path.suffix or '(no extension)'}' is not an audio "
            f"format soundfile writes; use one of "
            f"{', '.join('.' + f.lower() for f in sorted(formats))}"
        )
    subtype = source.subtype if soundfile.check_format(extension, source.subtype) else None
    return extension, subtype


def _blocks(source: soundfile.SoundFile, frames: int) -> Iterator[np.ndarray]:
    source.seek(0)
    yield from source.blocks(blocksize=frames, dtype="float64", always_2d=True)


def _loudness_gain(
    source: soundfile.SoundFile, sos: np.ndarray, block_frames: int, advance: Callable[[int], None]
) -> tuple[float, float]:
    """First pass: the input's loudness and the gain that brings the EQ'd signal to it."""
    before = LoudnessMeter(source.samplerate, source.channels)
    after = LoudnessMeter(source.samplerate, source.channels)
    equaliser = StreamingFilter(sos, source.channels)
    for block in _blocks(source, block_frames):
        before.add(block)
        after.add(equaliser(block))
        advance(len(block))
    input_lufs, eq_lufs = before.integrated(), after.integrated()
    if np.isfinite(input_lufs) and np.isfinite(eq_lufs):
        return input_lufs, input_lufs - eq_lufs
    return input_lufs, 0.0  # silence: nothing to match


def _write_filtered(
    source: soundfile.SoundFile,
    sink: soundfile.SoundFile,
    sos: np.ndarray,
    gain_db: float,
    block_frames: int,
    advance: Callable[[int], None],
) -> tuple[float, int, float]:
    """Second (or only) pass: filter, scale, write; the peak, clipped count and loudness."""
    gain = 10 ** (gain_db / 20)
    equaliser = StreamingFilter(sos, source.channels)
    meter = LoudnessMeter(source.samplerate, source.channels)
    peak, clipped = 0.0, 0
    for block in _blocks(source, block_frames):
        out = equaliser(block) * gain
        peak = max(peak, float(np.abs(out).max(initial=0.0)))
        clipped += int(np.count_nonzero(np.abs(out) > 1.0))
        meter.add(out)
        sink.write(out)
        advance(len(block))
    return peak, clipped, meter.integrated()


def render_file(
    source_path: Path | str,
    target_path: Path | str,
    setting: np.ndarray,
    *,
    match_loudness: bool = False,
    overwrite: bool = False,
    block_frames: int = BLOCK_FRAMES,
    progress: Callable[[int, int], None] | None = None,
) -> RenderReport:
    """Apply ``setting`` to an audio file and write the result, whole or not at all.

    Args:
        source_path: The input audio file (any format soundfile reads).
        target_path: The output; its extension picks the format. Written to a temporary
            file beside it and renamed, so it appears complete or not at all.
        setting: 13 parameters in plug-in units.
        match_loudness: Scale the output to the input's integrated loudness (a second pass).
        overwrite: Replace an existing output (never the input: that is refused).
        block_frames: Frames per block (memory use is proportional to it, not to the file).
        progress: Called with (frames done, total frames), over both passes when matching.

    Raises:
        AudioError: Unreadable input, unsupported output format, output equal to the
            input, or an existing output without ``overwrite``.
    """
    source_path, target_path = Path(source_path), Path(target_path)
    values = check_setting(setting)
    if target_path.resolve() == source_path.resolve():
        raise AudioError(
            f"the output '{target_path}' is the input file; choose another output path "
            "(the input is never overwritten)"
        )
    if target_path.exists() and not overwrite:
        raise AudioError(f"'{target_path}' exists; pass overwrite (--overwrite) to replace it")
    with _open_input(source_path) as source:
        extension, subtype = _output_format(target_path, source)
        rate, channels, frames = source.samplerate, source.channels, source.frames
        fitted, moved = fit_to_sample_rate(values, rate)
        sos = second_order_sections(fitted, rate)
        report = RenderReport(frames, rate, channels, frames / rate, moved)
        total = (2 if match_loudness else 1) * frames
        done = [0]

        def advance(count: int) -> None:
            done[0] += count
            if progress is not None:
                progress(done[0], total)

        if match_loudness:
            report.input_lufs, report.gain_db = _loudness_gain(source, sos, block_frames, advance)
        target_path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=target_path.parent, prefix=f".{target_path.name}.", suffix=".part"
        )
        os.close(handle)
        try:
            with soundfile.SoundFile(
                temporary, "w", rate, channels, subtype=subtype, format=extension
            ) as sink:
                peak, report.clipped_samples, report.output_lufs = _write_filtered(
                    source, sink, sos, report.gain_db, block_frames, advance
                )
            os.replace(temporary, target_path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
    with np.errstate(divide="ignore"):
        report.peak_dbfs = float(20 * np.log10(peak)) if peak > 0 else float("-inf")
    return report
