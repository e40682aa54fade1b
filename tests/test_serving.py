"""Words to EQ settings: blends, morphs, amounts, errors, and the saved bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from neural_eq_morphing.eq.audio import StreamingFilter, second_order_sections
from neural_eq_morphing.eq.normalisers import MinMaxNormaliser
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETER_NAMES, UPPER_LIMITS
from neural_eq_morphing.eq.response import response_db
from neural_eq_morphing.models.modules import build_model
from neural_eq_morphing.serving import SemanticEQ, WordsError, latent_names, parse_blend

GAINS = [i for i, name in enumerate(PARAMETER_NAMES) if name.endswith("_gain_db")]


@pytest.fixture(scope="module")
def semantic_eq() -> SemanticEQ:
    torch.manual_seed(0)
    model = build_model({"decoder_head": "normalised", "latent_dim": 4}).eval()
    normaliser = MinMaxNormaliser.from_plugin_limits().to_dict()
    rng = np.random.default_rng(0)
    centroids = pd.DataFrame(rng.uniform(-0.8, 0.8, (3, 4)), columns=latent_names(4))
    centroids.insert(0, "n_rows", [30, 20, 10])
    centroids.insert(0, "term", ["warm", "bright", "punchy"])
    return SemanticEQ(model, normaliser, normaliser, centroids)


def test_a_blend_mixes_centroids_before_decoding(semantic_eq):
    centroids = semantic_eq.term_centroids.set_index("term")[latent_names(4)]
    mixed = 0.7 * centroids.loc["warm"] + 0.3 * centroids.loc["bright"]
    expected = semantic_eq.decode(mixed.to_numpy())[0]
    np.testing.assert_allclose(semantic_eq.preset("warm=0.7,bright=0.3"), expected)
    np.testing.assert_allclose(semantic_eq.preset("warm=7,bright=3"), expected)  # normalised
    np.testing.assert_allclose(
        semantic_eq.preset("warm", morph_to="bright", position=0.3), expected, rtol=1e-6
    )
    # ... which is not the mix of the decoded presets.
    decoded_mix = 0.7 * semantic_eq.preset("warm") + 0.3 * semantic_eq.preset("bright")
    assert not np.allclose(decoded_mix, expected)


def test_every_preset_is_a_valid_setting_and_amount_scales_its_gains(semantic_eq):
    base = semantic_eq.preset("punchy")
    assert np.all((base >= LOWER_LIMITS) & (base <= UPPER_LIMITS))
    opposite = semantic_eq.preset("punchy", amount=-1.0)
    np.testing.assert_allclose(opposite[GAINS], -base[GAINS])
    others = [i for i in range(13) if i not in GAINS]
    np.testing.assert_array_equal(opposite[others], base[others])
    np.testing.assert_allclose(semantic_eq.preset("punchy", amount=0.0)[GAINS], 0.0)


@pytest.mark.parametrize("rate", [44_100, 48_000])
def test_a_blend_applied_to_an_impulse_has_the_response_models_magnitude(semantic_eq, rate):
    setting = semantic_eq.preset("warm=0.6,bright=0.4", amount=0.8)
    impulse = np.zeros((1 << 17, 1))
    impulse[0] = 1.0
    output = StreamingFilter(second_order_sections(setting, rate), 1)(impulse)[:, 0]
    frequencies = np.fft.rfftfreq(len(output), 1 / rate)
    keep = (frequencies >= 20) & (frequencies <= 20_000)
    measured = 20 * np.log10(np.abs(np.fft.rfft(output)[keep]))
    assert np.abs(measured - response_db(setting, frequencies[keep], fs=rate)).max() < 0.05


@pytest.mark.parametrize(
    ("words", "kwargs", "message"),
    [
        (
            "wram",
            {},
            r"unknown word 'wram'; did you mean 'warm'\? Known words: warm, bright, punchy",
        ),
        ("warm=-1,bright=1", {}, "must be finite and not negative, got warm=-1"),
        ("warm=0,bright=0", {}, "the weights sum to zero"),
        ("warm=lots", {}, "the weight of 'warm' in 'warm=lots' is not a number"),
        ("warm,,bright", {}, "empty word"),
        ("warm,warm", {}, "'warm' appears twice"),
        ("warm", {"morph_to": "bright", "position": 1.5}, r"within 0 … 1, got 1.5"),
        ("warm", {"amount": float("nan")}, "the amount must be a finite number"),
    ],
)
def test_bad_words_get_a_clear_error(semantic_eq, words, kwargs, message):
    with pytest.raises(WordsError, match=message):
        semantic_eq.preset(words, **kwargs)


def test_predict_answers_one_setting_per_request(semantic_eq):
    requests = pd.DataFrame(
        [
            {"words": "warm", "morph_to": None, "position": None, "amount": None},
            {"words": "warm", "morph_to": "bright", "position": 0.5, "amount": 0.5},
        ]
    )
    answers = semantic_eq.predict(requests)
    assert list(answers.columns) == list(PARAMETER_NAMES)
    np.testing.assert_allclose(answers.iloc[0], semantic_eq.preset("warm"))
    np.testing.assert_allclose(
        answers.iloc[1], semantic_eq.preset("warm", morph_to="bright", position=0.5, amount=0.5)
    )
    with pytest.raises(MlflowException, match="needs a 'words' column") as caught:
        semantic_eq.predict(pd.DataFrame([{"term": "warm"}]))
    assert isinstance(caught.value.__cause__, WordsError)


def test_the_bundle_saves_and_loads_the_same(semantic_eq, tmp_path):
    semantic_eq.save(tmp_path / "bundle")
    loaded = SemanticEQ.load(tmp_path / "bundle")
    assert loaded.words == ["warm", "bright", "punchy"]
    np.testing.assert_allclose(
        loaded.preset("warm=1,punchy=2"), semantic_eq.preset("warm=1,punchy=2")
    )


def test_parse_blend():
    assert parse_blend("Warm") == {"warm": 1.0}
    assert parse_blend(" warm = 0.7 , bright=0.3") == {"warm": 0.7, "bright": 0.3}
