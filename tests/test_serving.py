"""Words to EQ settings: blends, morphs, amounts, samples, errors, and the saved bundle."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data

from neural_eq_morphing.eq.audio import StreamingFilter, second_order_sections
from neural_eq_morphing.eq.normalisers import MinMaxNormaliser
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETER_NAMES, UPPER_LIMITS
from neural_eq_morphing.eq.response import response_db
from neural_eq_morphing.models.network import build_model
from neural_eq_morphing.models.sampling import spread_columns
from neural_eq_morphing.serving import SemanticEQ, WordsError, latent_names, parse_blend

GAINS = [i for i, name in enumerate(PARAMETER_NAMES) if name.endswith("_gain_db")]


def small_semantic_eq(*, spread: bool = True) -> SemanticEQ:
    """An untrained 4-d model with 3 words; their spread too unless ``spread`` is False.

    ``spread=False`` is a model saved before the term centroids had their spread.
    """
    torch.manual_seed(0)
    model = build_model({"decoder_head": "normalised", "latent_dim": 4}).eval()
    normaliser = MinMaxNormaliser.from_plugin_limits().to_dict()
    rng = np.random.default_rng(0)
    centroids = pd.DataFrame(rng.uniform(-0.8, 0.8, (3, 4)), columns=latent_names(4))
    if spread:
        spreads = rng.uniform(0.1, 0.4, (3, 4))
        centroids[spread_columns(latent_names(4))] = spreads
    centroids.insert(0, "n_rows", [30, 20, 10])
    centroids.insert(0, "term", ["warm", "bright", "punchy"])
    return SemanticEQ(model, normaliser, normaliser, centroids)


@pytest.fixture(scope="module")
def semantic_eq() -> SemanticEQ:
    return small_semantic_eq()


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


def test_samples_are_distinct_valid_settings_and_the_seed_repeats_them(semantic_eq):
    for words, kwargs in [
        ("warm", {}),
        ("warm=0.7,bright=0.3", {"amount": 0.8}),
        ("warm", {"morph_to": "punchy", "position": 0.4, "amount": -1.0}),
    ]:
        samples = semantic_eq.sample_presets(words, count=5, seed=3, **kwargs)
        assert samples.shape == (5, len(PARAMETER_NAMES))
        assert len(np.unique(samples, axis=0)) == 5
        assert np.all((samples >= LOWER_LIMITS) & (samples <= UPPER_LIMITS))
        again = semantic_eq.sample_presets(words, count=5, seed=3, **kwargs)
        np.testing.assert_array_equal(again, samples)
        other = semantic_eq.sample_presets(words, count=5, seed=4, **kwargs)
        assert not np.any(np.all(np.isclose(other[:, None], samples[None]), axis=2))
        assert not np.any(np.all(np.isclose(samples, semantic_eq.preset(words, **kwargs)), axis=1))


def test_a_model_without_the_words_spread_says_so(semantic_eq):
    old = small_semantic_eq(spread=False)
    np.testing.assert_allclose(old.preset("warm"), semantic_eq.preset("warm"))
    with pytest.raises(WordsError, match=r"saved without its words' spread.*`kedro run`"):
        old.sample_presets("warm", count=3, seed=0)
    with pytest.raises(MlflowException, match="saved without its words' spread"):
        old.predict(pd.DataFrame([{"words": "warm", "samples": 3}]))


def test_predict_answers_the_samples_of_the_requests_that_ask(semantic_eq):
    plain = semantic_eq.predict(pd.DataFrame([{"words": "warm", "samples": np.nan, "seed": 5}]))
    assert list(plain.columns) == list(PARAMETER_NAMES)  # NaN samples: not given
    np.testing.assert_allclose(plain.iloc[0], semantic_eq.preset("warm"))

    requests = pd.DataFrame(
        [
            {"words": "warm", "samples": None, "seed": None},
            {"words": "bright", "morph_to": "punchy", "position": 0.5, "samples": 3, "seed": 2},
            {"words": "punchy", "amount": 0.5, "samples": 2},
        ]
    )
    answers = semantic_eq.predict(requests)
    assert list(answers.columns) == ["request", "sample", *PARAMETER_NAMES]
    assert answers["request"].tolist() == [0, 1, 1, 1, 2, 2]
    assert answers["sample"].tolist() == [0, 0, 1, 2, 0, 1]
    values = answers[list(PARAMETER_NAMES)].to_numpy()
    np.testing.assert_allclose(values[0], semantic_eq.preset("warm"))
    np.testing.assert_allclose(
        values[1:4],
        semantic_eq.sample_presets("bright", count=3, seed=2, morph_to="punchy", position=0.5),
    )
    np.testing.assert_allclose(  # the seed defaults to 0
        values[4:], semantic_eq.sample_presets("punchy", count=2, seed=0, amount=0.5)
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"samples": 0}, "'samples' must be a whole number of at least 1, got 0"),
        ({"samples": -2}, "'samples' must be a whole number of at least 1"),
        ({"samples": 2.5}, "'samples' must be a whole number of at least 1, got 2.5"),
        ({"samples": "3"}, "'samples' must be a whole number"),
        ({"samples": True}, "'samples' must be a whole number"),
        ({"samples": 2, "seed": -1}, "'seed' must be a whole number of at least 0, got -1"),
        ({"samples": 2, "seed": 0.5}, "'seed' must be a whole number of at least 0"),
    ],
)
def test_bad_samples_or_seed_are_invalid_requests(semantic_eq, fields, message):
    with pytest.raises(MlflowException, match=message) as caught:
        semantic_eq.predict(pd.DataFrame([{"words": "warm", **fields}]))
    assert isinstance(caught.value.__cause__, WordsError)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 when served


def test_the_signature_has_optional_samples_seed_request_and_sample():
    signature = SemanticEQ.signature()
    inputs = {spec.name: spec for spec in signature.inputs.inputs}
    assert inputs["words"].required
    assert not inputs["samples"].required
    assert not inputs["seed"].required
    outputs = {spec.name: spec for spec in signature.outputs.inputs}
    assert not outputs["request"].required
    assert not outputs["sample"].required
    assert all(outputs[name].required for name in PARAMETER_NAMES)


@pytest.mark.filterwarnings("ignore:Operation with range is deprecated")  # MLflow's, on pandas 3
def test_the_logged_model_takes_a_batch_where_some_requests_ask_for_samples(semantic_eq, tmp_path):
    # As `mlflow models serve` parses a JSON body (its schema's casts), then predicts.
    semantic_eq.save(tmp_path / "data")
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        loader_module="neural_eq_morphing.serving",
        data_path=str(tmp_path / "data"),
        signature=SemanticEQ.signature(),
        input_example=pd.DataFrame([{"words": "warm", "amount": 1.0}]),  # as `kedro run` logs
    )
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    schema = model.metadata.get_input_schema()

    def served(records: list[dict]) -> pd.DataFrame:
        return model.predict(infer_and_parse_data({"dataframe_records": records}, schema))

    answers = served([{"words": "warm"}, {"words": "bright", "samples": 3, "seed": 1}])
    assert answers["request"].tolist() == [0, 1, 1, 1]
    np.testing.assert_allclose(
        answers[list(PARAMETER_NAMES)].to_numpy()[1:],
        semantic_eq.sample_presets("bright", count=3, seed=1),
        rtol=1e-6,
    )
    assert list(served([{"words": "warm", "amount": 0.5}]).columns) == list(PARAMETER_NAMES)
    assert len(model.predict(pd.DataFrame([{"words": "warm", "samples": 4}]))) == 4
    with pytest.raises(MlflowException, match=r"got 2\.5"):  # refused, not truncated to 2
        served([{"words": "warm", "samples": 2.5}])
