"""``neural-eq-morphing``: presets from words and audio files, on a real trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from neural_eq_morphing.__main__ import main
from neural_eq_morphing.eq.audio import fit_to_sample_rate, render_file
from neural_eq_morphing.eq.parameters import PARAMETER_NAMES
from neural_eq_morphing.trained import load_semantic_eq

pytestmark = pytest.mark.integration


@pytest.fixture
def project(short_run, monkeypatch) -> Path:
    monkeypatch.chdir(short_run["project"])
    return short_run["project"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _clip(path: Path, seconds: float = 2.0, rate: int = 44_100) -> Path:
    noise = 0.05 * np.random.default_rng(1).standard_normal((int(seconds * rate), 2))
    soundfile.write(path, noise, rate)
    return path


def test_words_lists_what_the_model_knows(project):
    result = invoke("words")
    assert result.exit_code == 0
    assert result.output.strip().split(", ")[:2] == ["warm", "bright"]


def test_preset_prints_and_exports_the_setting(project, tmp_path):
    result = invoke(
        "preset", "-w", "warm=0.7,bright=0.3", "--amount", "0.8", "--json", str(tmp_path / "p.json")
    )
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "p.json").read_text())
    semantic_eq, version = load_semantic_eq(project_path=project)
    expected = semantic_eq.preset("warm=0.7,bright=0.3", amount=0.8)
    assert list(document["parameters"]) == list(PARAMETER_NAMES)
    np.testing.assert_allclose(list(document["parameters"].values()), expected)
    assert document["run"] == version
    for name in PARAMETER_NAMES:
        assert name in result.output


def test_apply_writes_the_processed_file(project, tmp_path):
    source = _clip(tmp_path / "in.wav")
    result = invoke(
        "apply",
        str(source),
        str(tmp_path / "out.flac"),
        "-w",
        "warm",
        "-a",
        "0.5",
        "--no-match-loudness",
    )
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output
    assert "peak" in result.output
    semantic_eq, _ = load_semantic_eq(project_path=project)
    expected_path = tmp_path / "expected.flac"
    render_file(source, expected_path, semantic_eq.preset("warm", amount=0.5))
    written, _ = soundfile.read(tmp_path / "out.flac")
    expected, _ = soundfile.read(expected_path)
    np.testing.assert_array_equal(written, expected)


def test_apply_matches_loudness_by_default(project, tmp_path):
    source = _clip(tmp_path / "in.wav", seconds=3)
    result = invoke("apply", str(source), str(tmp_path / "out.wav"), "-w", "bright")
    assert result.exit_code == 0, result.output
    assert "loudness: input" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-w", "wram"], "unknown word 'wram'; did you mean 'warm'?"),
        (["-w", "warm=-1,bright=2"], "must be finite and not negative"),
        (["-w", "warm=0,bright=0"], "the weights sum to zero"),
    ],
    ids=["unknown word", "negative weight", "weights sum to zero"],
)
def test_bad_words_are_one_line(project, tmp_path, args, message):
    source = _clip(tmp_path / "in.wav")
    result = invoke("apply", str(source), str(tmp_path / "out.wav"), *args)
    assert result.exit_code == 1
    assert result.output.count("Error:") == 1
    assert message in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


@pytest.mark.parametrize(
    ("make", "target", "message"),
    [
        (lambda p: p.write_bytes(b"hello" * 500), "out.wav", "cannot be read as audio"),
        (_clip, "out.mp4", "not an audio format soundfile writes"),
        (_clip, "in.wav", "is the input file"),
        (lambda p: None, "out.wav", "no audio file at"),
    ],
    ids=["not audio", "unsupported format", "output is the input", "missing input"],
)
def test_bad_files_are_one_line_and_leave_nothing(project, tmp_path, make, target, message):
    source = tmp_path / "in.wav"
    make(source)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("apply", str(source), str(tmp_path / target), "-w", "warm")
    assert result.exit_code == 1
    assert result.output.count("Error:") == 1
    assert message in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_without_a_trained_model_it_says_which_command_to_run(kedro_project, tmp_path):
    result = invoke("preset", "-w", "warm")
    assert result.exit_code == 1
    assert "no trained log2 model" in result.output
    assert "Run `kedro run` first" in result.output


def test_low_sample_rates_are_reported(project, tmp_path):
    source = _clip(tmp_path / "in.wav", rate=16_000)
    result = invoke(
        "apply", str(source), str(tmp_path / "out.wav"), "-w", "bright", "--no-match-loudness"
    )
    assert result.exit_code == 0, result.output
    semantic_eq, _ = load_semantic_eq(project_path=project)
    moved = fit_to_sample_rate(semantic_eq.preset("bright"), 16_000)[1]
    for note in moved:
        assert f"moved below Nyquist: {note}" in result.output
