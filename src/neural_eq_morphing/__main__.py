"""``neural-eq-morphing``: use the trained semantic EQ from the command line.

    neural-eq-morphing words                         # the words the model knows
    neural-eq-morphing preset --words warm=0.7,bright=0.3 --amount 0.8 --json warm.json
    neural-eq-morphing preset --words warm --samples 5 --seed 1   # 5 different settings
    neural-eq-morphing apply in.wav out.wav --words warm --amount 0.8
    neural-eq-morphing app                           # the web app on http://127.0.0.1:7860
    neural-eq-morphing run [kedro run options]       # the same as `kedro run`

The model is the newest finished ``kedro run``'s (``--design`` picks another design). A
user error (an unknown word, a bad file, no trained model) prints one line.
"""

from __future__ import annotations

from neural_eq_morphing.warning_filters import install as _filter_uninformative_warnings

_filter_uninformative_warnings()  # before Kedro, kedro-mlflow and MLflow are imported

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

from neural_eq_morphing.cli import _with_user_errors  # noqa: E402
from neural_eq_morphing.eq.audio import RenderReport, render_file  # noqa: E402
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES  # noqa: E402
from neural_eq_morphing.errors import UserError  # noqa: E402
from neural_eq_morphing.runs import write_atomically  # noqa: E402


def _words_options(command: Any) -> Any:
    """The options that pick a preset: words, morph target and position, amount, design."""
    options = [
        click.option(
            "--words",
            "-w",
            required=True,
            help="A word or a weighted blend, e.g. warm or warm=0.7,bright=0.3.",
        ),
        click.option("--morph-to", default=None, help="Morph towards this word or blend."),
        click.option(
            "--position",
            type=click.FloatRange(0.0, 1.0),
            default=0.5,
            show_default=True,
            help="Where along the morph (0: --words, 1: --morph-to).",
        ),
        click.option(
            "--amount",
            "-a",
            type=float,
            default=1.0,
            show_default=True,
            help="Scale on the band gains; negative gives the opposite curve.",
        ),
        click.option("--design", default="log2", show_default=True, help="Which trained design."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _preset(
    words: str,
    morph_to: str | None,
    position: float,
    amount: float,
    design: str,
    samples: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The setting for the options, and the document that records it (for ``--json``).

    With ``samples``, that many settings ``(samples, 13)`` drawn from the words' regions
    (``SemanticEQ.sample_presets``); the document then records the ``seed`` and lists them
    under ``samples`` instead of one ``parameters``.
    """
    from neural_eq_morphing.trained import load_semantic_eq  # noqa: PLC0415 - loads Kedro

    semantic_eq, version = load_semantic_eq(design, quiet=True)
    document: dict[str, Any] = {
        "words": words,
        "morph_to": morph_to,
        "position": position if morph_to else None,
        "amount": amount,
        "design": design,
        "run": version,
    }
    if samples is None:
        setting = semantic_eq.preset(words, morph_to=morph_to, position=position, amount=amount)
        document["parameters"] = _parameters(setting)
    else:
        setting = semantic_eq.sample_presets(
            words, count=samples, seed=seed, morph_to=morph_to, position=position, amount=amount
        )
        document["seed"] = seed
        document["samples"] = [_parameters(row) for row in setting]
    return setting, document


def _parameters(setting: np.ndarray) -> dict[str, float]:
    return dict(zip(PARAMETER_NAMES, map(float, setting), strict=True))


_JSON_OPTION = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the preset (what was asked, the run, the 13 values) to this JSON file.",
)


def _export(document: dict[str, Any], json_path: Path | None) -> None:
    if json_path is not None:
        write_atomically(json_path, json.dumps(document, indent=1))
        click.echo(f"Wrote {json_path}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Use the trained semantic EQ: presets from words, applied to audio files."""


@click.command()
@click.option("--design", default="log2", show_default=True, help="Which trained design.")
def words(design: str) -> None:
    """List the words the trained model knows (most examples first)."""
    from neural_eq_morphing.trained import load_semantic_eq  # noqa: PLC0415

    semantic_eq, _ = load_semantic_eq(design, quiet=True)
    click.echo(", ".join(semantic_eq.words))


@click.command()
@_words_options
@click.option(
    "--samples",
    type=int,
    default=None,
    help="Draw this many different settings from the words' region of the latent "
    "(one column each) instead of the one typical setting.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of --samples: the same seed gives the same settings.",
)
@_JSON_OPTION
def preset(
    words: str,
    morph_to: str | None,
    position: float,
    amount: float,
    design: str,
    samples: int | None,
    seed: int,
    json_path: Path | None,
) -> None:
    """Print the EQ setting for a word, a blend or a morph (dB / Hz / Q).

    With --samples N, print N different settings for it, one column each, drawn from
    its words' region of the learned space: the distribution the compare report measures.
    """
    if samples is not None and samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}")
    if seed < 0:
        raise UserError(f"--seed must be at least 0, got {seed}")
    _, document = _preset(words, morph_to, position, amount, design, samples, seed)
    if samples is None:
        for name, value in document["parameters"].items():
            click.echo(f"{name:>20}  {value:10.2f}")
    else:
        click.echo(f"{'sample':>20}" + "".join(f"  {index:>10}" for index in range(samples)))
        for name in PARAMETER_NAMES:
            values = (sample[name] for sample in document["samples"])
            click.echo(f"{name:>20}" + "".join(f"  {value:10.2f}" for value in values))
    _export(document, json_path)


def _describe(report: RenderReport) -> list[str]:
    lines = [f"{report.seconds:.1f} s, {report.channels} ch, {report.sample_rate} Hz"]
    lines += [f"moved below Nyquist: {note}" for note in report.moved]
    if report.input_lufs is not None:
        lines.append(
            f"loudness: input {report.input_lufs:.1f} LUFS, output {report.output_lufs:.1f} LUFS "
            f"(gain {report.gain_db:+.1f} dB after the EQ)"
        )
    peak = f"peak {report.peak_dbfs:.1f} dBFS"
    if report.clipped_samples:
        peak += f"; {report.clipped_samples} samples beyond full scale (clipped): lower --amount"
    lines.append(peak)
    return lines


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(path_type=Path))
@_words_options
@click.option(
    "--match-loudness/--no-match-loudness",
    default=True,
    show_default=True,
    help="Match the output's integrated loudness (ITU-R BS.1770) to the input's, for a fair A/B.",
)
@click.option("--overwrite", is_flag=True, help="Replace TARGET if it exists (never SOURCE).")
@_JSON_OPTION
def apply(
    source: Path,
    target: Path,
    words: str,
    morph_to: str | None,
    position: float,
    amount: float,
    design: str,
    match_loudness: bool,
    overwrite: bool,
    json_path: Path | None,
) -> None:
    """Apply a preset from words to the audio file SOURCE and write TARGET (WAV, FLAC, OGG…)."""
    setting, document = _preset(words, morph_to, position, amount, design)
    label = f"{source.name} → {target.name}"
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        report = render_file(
            source,
            target,
            setting,
            match_loudness=match_loudness,
            overwrite=overwrite,
            progress=progress,
        )
    click.echo(f"Wrote {target}: " + "; ".join(_describe(report)))
    _export(document, json_path)


@click.command()
@click.option("--design", default="log2", show_default=True, help="Which trained design.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 127.0.0.1 is this machine only.",
)
@click.option("--port", default=7860, show_default=True, type=int, help="Port to listen on.")
def app(design: str, host: str, port: int) -> None:
    """Open the web app: morph between words, see the curve, hear it on your clip."""
    from neural_eq_morphing.app import serve  # noqa: PLC0415 - Gradio is slow to import
    from neural_eq_morphing.trained import load_semantic_eq  # noqa: PLC0415

    semantic_eq, version = load_semantic_eq(design, quiet=True)
    click.echo(f"Semantic EQ app on http://{host}:{port} (Ctrl-C stops it)")
    serve(semantic_eq, version, host, port)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def run(context: click.Context) -> None:
    """Run the pipelines: the same as ``kedro run`` (same options)."""
    from kedro.framework.cli.utils import find_run_command  # noqa: PLC0415
    from kedro.framework.project import configure_project  # noqa: PLC0415

    package_name = Path(__file__).parent.name
    configure_project(package_name)
    find_run_command(package_name)(args=context.args, standalone_mode=True)


for _command in (words, preset, apply, app):
    main.add_command(_with_user_errors(_command))
main.add_command(run)


if __name__ == "__main__":
    main()
