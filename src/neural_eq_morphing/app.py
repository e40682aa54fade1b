"""A web app to morph the semantic EQ and hear it: ``neural-eq-morphing app``.

Pick two words (or type blends), move the morph and amount sliders, and see the EQ curve
and its 13 parameters change; "Another one" replaces the setting by another drawn from the
words' region of the learned space (seeded: the n-th click after the controls were set
gives the same setting every time; moving a control returns to the typical setting, the
centroid's); upload a clip, or use a test signal the app makes itself
(pink noise, a synthetic chord: nothing is downloaded), and hear the original and the
processed version at the same loudness (ITU-R BS.1770). Audio goes to the browser as
files, not as arrays the audio widget would peak-normalise. Binds to 127.0.0.1.
"""

from __future__ import annotations

import os

# Before Gradio is imported: no analytics or version checks over the network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import tempfile
from pathlib import Path

import gradio as gr
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import soundfile
from matplotlib.figure import Figure

from neural_eq_morphing.eq.audio import render_file
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.eq.response import frequency_grid, response_db
from neural_eq_morphing.errors import UserError
from neural_eq_morphing.serving import SemanticEQ

TEST_SIGNALS = ("pink noise", "synthetic chord")
SAMPLE_RATE = 44_100
CLIP_SECONDS = 6.0
#: No web fonts: the default theme fetches Google Fonts, and the app must work offline.
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])


def pink_noise(seconds: float = CLIP_SECONDS, rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Stereo pink noise (1/f power), -20 dBFS RMS, shaped in the frequency domain."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * rate)
    spectrum = rng.standard_normal((frames // 2 + 1, 2)) + 1j * rng.standard_normal(
        (frames // 2 + 1, 2)
    )
    frequencies = np.fft.rfftfreq(frames, 1 / rate)
    spectrum /= np.sqrt(np.maximum(frequencies, 20.0))[:, None]
    signal = np.fft.irfft(spectrum, n=frames, axis=0)
    return 0.1 * signal / np.sqrt(np.mean(signal**2))


def synthetic_chord(seconds: float = CLIP_SECONDS, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A C-major chord of sawtooth-like tones (harmonics up to 10 kHz), with a slow swell."""
    time = np.arange(int(seconds * rate)) / rate
    chord = np.zeros_like(time)
    for fundamental in (65.41, 130.81, 164.81, 196.00, 261.63):
        for harmonic in range(1, int(10_000 / fundamental) + 1):
            chord += np.sin(2 * np.pi * fundamental * harmonic * time) / harmonic
    chord *= 0.5 - 0.4 * np.cos(2 * np.pi * time / seconds)
    chord = 0.3 * chord / np.abs(chord).max()
    return np.stack([chord, np.roll(chord, 101)], axis=1)


def curve_figure(setting: np.ndarray, title: str) -> Figure:
    """The setting's magnitude response, 20 Hz to 20 kHz."""
    frequencies = frequency_grid(512)
    figure, axes = plt.subplots(figsize=(7, 3.2))
    axes.semilogx(frequencies, response_db(setting, frequencies), color="#c2410c", linewidth=2)
    axes.axhline(0, color="grey", linewidth=0.8)
    axes.set(xlim=(20, 20_000), ylim=(-15, 15), xlabel="frequency (Hz)", ylabel="gain (dB)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    plt.close(figure)
    return figure


def parameter_table(setting: np.ndarray) -> pd.DataFrame:
    """The 13 parameters, one row each, rounded for reading."""
    return pd.DataFrame({"parameter": PARAMETER_NAMES, "value": np.round(setting, 2)})


class Session:
    """What the app's callbacks share: the model and a folder for the audio it writes."""

    def __init__(self, semantic_eq: SemanticEQ, folder: Path) -> None:
        self.semantic_eq = semantic_eq
        self.folder = folder
        self._count = 0

    def setting(
        self, first: str, second: str, position: float, amount: float, draw: int = 0
    ) -> np.ndarray:
        """The preset for the controls' values, or (``draw`` n > 0) their n-th sample.

        The n-th sample is drawn with seed n - 1 from the words' regions
        (``SemanticEQ.sample_presets``). A bad word is shown as the app's error.
        """
        options = {"morph_to": second, "position": position, "amount": amount}
        try:
            if draw:
                return self.semantic_eq.sample_presets(
                    first, count=1, seed=int(draw) - 1, **options
                )[0]
            return self.semantic_eq.preset(first, **options)
        except UserError as error:
            raise gr.Error(str(error)) from None

    def show(self, first: str, second: str, position: float, amount: float, draw: int = 0):
        """The curve and the parameters for the controls' values (and draw)."""
        setting = self.setting(first, second, position, amount, draw)
        title = f"{first} → {second} at {position:.2f}, amount {amount:.2f}"
        if draw:
            title += f", sample {draw}"
        return curve_figure(setting, title), parameter_table(setting)

    def typical(self, first: str, second: str, position: float, amount: float):
        """The controls' preset (the centroids'), and the draw counter back at 0."""
        return (*self.show(first, second, position, amount), 0)

    def another(self, first: str, second: str, position: float, amount: float, draw: int):
        """The next sample for the controls' values, and the counter moved on to it."""
        draw = int(draw) + 1
        return (*self.show(first, second, position, amount, draw), draw)

    def source(self, upload: str | None, signal: str) -> Path:
        """The uploaded clip, or the chosen test signal written as a WAV file."""
        if upload:
            return Path(upload)
        path = self.folder / f"{signal.replace(' ', '_')}.wav"
        if not path.exists():
            audio = pink_noise() if signal == "pink noise" else synthetic_chord()
            soundfile.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
        return path

    def process(
        self,
        first: str,
        second: str,
        position: float,
        amount: float,
        draw: int,
        upload: str | None,
        signal: str,
    ):
        """Original and processed audio (as files), loudness-matched, and a report line.

        The processed audio has the setting on show: the preset, or the ``draw``-th sample.
        """
        setting = self.setting(first, second, position, amount, draw)
        source = self.source(upload, signal)
        self._count += 1
        target = self.folder / f"processed_{self._count}.wav"
        try:
            report = render_file(source, target, setting, match_loudness=True, overwrite=True)
        except UserError as error:
            raise gr.Error(str(error)) from None
        notes = [f"{report.seconds:.1f} s, {report.channels} ch, {report.sample_rate} Hz"]
        if report.input_lufs is not None:
            notes.append(
                f"both at {report.input_lufs:.1f} LUFS "
                f"(EQ gain compensated {report.gain_db:+.1f} dB)"
            )
        notes.append(f"processed peak {report.peak_dbfs:.1f} dBFS")
        notes += [f"moved below Nyquist: {note}" for note in report.moved]
        return str(source), str(target), "; ".join(notes)


def build_app(semantic_eq: SemanticEQ, version: str, folder: Path | None = None) -> gr.Blocks:
    """The app for one trained semantic EQ (``version``: the run it comes from)."""
    session = Session(semantic_eq, folder or Path(tempfile.mkdtemp(prefix="semantic_eq_app_")))
    words = semantic_eq.words
    first_default = "warm" if "warm" in words else words[0]
    second_default = "bright" if "bright" in words else words[-1]
    with gr.Blocks(title="Semantic EQ morphing", analytics_enabled=False) as app:
        gr.Markdown(
            f"## Semantic EQ morphing\nModel of the finished run `{version}`. A morph mixes "
            "the two words' places in the learned space, then decodes the EQ."
        )
        with gr.Row():
            first = gr.Dropdown(
                words, value=first_default, label="from", allow_custom_value=True, elem_id="first"
            )
            second = gr.Dropdown(
                words, value=second_default, label="to", allow_custom_value=True, elem_id="second"
            )
        with gr.Row():
            position = gr.Slider(0, 1, value=0.5, step=0.01, label="morph", elem_id="morph")
            amount = gr.Slider(
                -1.5,
                1.5,
                value=1.0,
                step=0.05,
                label="amount (negative: the opposite)",
                elem_id="amount",
            )
        with gr.Row():
            plot = gr.Plot(label="EQ curve", elem_id="curve")
            table = gr.Dataframe(label="13 parameters", interactive=False, elem_id="parameters")
        another = gr.Button("Another one", elem_id="another")
        draw = gr.State(0)  # 0: the preset on show; n: the n-th sample since the controls moved
        with gr.Row():
            upload = gr.Audio(
                type="filepath", sources=["upload"], label="your clip (optional)", elem_id="upload"
            )
            signal = gr.Radio(
                list(TEST_SIGNALS),
                value=TEST_SIGNALS[0],
                label="or a test signal",
                elem_id="signal",
            )
        process = gr.Button("Process", variant="primary", elem_id="process")
        report = gr.Textbox(label="report", interactive=False, elem_id="report")
        with gr.Row():
            original = gr.Audio(
                type="filepath", label="original", interactive=False, elem_id="original"
            )
            processed = gr.Audio(
                type="filepath", label="processed", interactive=False, elem_id="processed"
            )
        controls = [first, second, position, amount]
        for control in controls:
            control.change(session.typical, controls, [plot, table, draw])
        app.load(session.typical, controls, [plot, table, draw])
        another.click(session.another, [*controls, draw], [plot, table, draw])
        process.click(
            session.process, [*controls, draw, upload, signal], [original, processed, report]
        )
    return app


def serve(
    semantic_eq: SemanticEQ,
    version: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    block: bool = True,
) -> gr.Blocks:
    """Start the app on ``host:port`` (127.0.0.1 by default: this machine only)."""
    app = build_app(semantic_eq, version)
    app.launch(
        server_name=host, server_port=port, theme=THEME, prevent_thread_lock=not block, quiet=True
    )
    return app
