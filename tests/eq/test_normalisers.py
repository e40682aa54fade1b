import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neural_eq_morphing.eq.normalisers import (
    IdentityNormaliser,
    MinMaxNormaliser,
    ZScoreNormaliser,
    build_normaliser,
    normaliser_from_dict,
)
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETERS, UPPER_LIMITS
from tests.conftest import random_settings


@st.composite
def in_range_settings(draw):
    """Settings drawn anywhere inside the plug-in limits, limits included."""
    rows = draw(st.integers(min_value=1, max_value=8))
    return np.array(
        [
            [
                draw(st.floats(min_value=p.minimum, max_value=p.maximum, allow_nan=False))
                for p in PARAMETERS
            ]
            for _ in range(rows)
        ]
    )


@given(in_range_settings())
@settings(max_examples=200, deadline=None)
def test_minmax_round_trip_and_unit_range(values):
    normaliser = MinMaxNormaliser.from_plugin_limits()
    features = normaliser.transform(values)
    assert np.all(features >= 0.0)
    assert np.all(features <= 1.0)
    # Relative 1e-4; gains cross zero, where only an absolute bound makes sense.
    np.testing.assert_allclose(normaliser.inverse_transform(features), values, rtol=1e-4, atol=1e-9)


@given(in_range_settings())
@settings(max_examples=100, deadline=None)
def test_zscore_round_trip(values):
    fitted = ZScoreNormaliser.fit(random_settings(np.random.default_rng(1), 50))
    np.testing.assert_allclose(
        fitted.inverse_transform(fitted.transform(values)), values, rtol=1e-4, atol=1e-9
    )


def test_minmax_maps_limits_to_zero_and_one_and_uses_log_scale():
    normaliser = MinMaxNormaliser.from_plugin_limits(["freq", "q"])
    np.testing.assert_allclose(normaliser.transform(LOWER_LIMITS[None]), 0.0, atol=1e-12)
    np.testing.assert_allclose(normaliser.transform(UPPER_LIMITS[None]), 1.0, atol=1e-12)
    middle = normaliser.transform(np.sqrt(np.abs(LOWER_LIMITS * UPPER_LIMITS))[None])[0]
    # The geometric mean of a log-scaled band lands in the middle; gains are linear.
    for index, spec in enumerate(PARAMETERS):
        if spec.kind == "gain":
            assert middle[index] == pytest.approx(1.0)  # sqrt(12*12) = 12 -> top of range
        else:
            assert middle[index] == pytest.approx(0.5)


def test_minmax_linear_frequencies_differ_from_log():
    values = random_settings(np.random.default_rng(3), 20)
    log = MinMaxNormaliser.from_plugin_limits(["freq", "q"]).transform(values)
    linear = MinMaxNormaliser.from_plugin_limits(["q"]).transform(values)
    freq = [i for i, p in enumerate(PARAMETERS) if p.kind == "freq"]
    assert not np.allclose(log[:, freq], linear[:, freq])
    np.testing.assert_allclose(np.delete(log, freq, 1), np.delete(linear, freq, 1))


def test_zscore_fit_gives_zero_mean_unit_std_and_handles_constant_column():
    values = random_settings(np.random.default_rng(4), 100)
    values[:, 0] = 3.0
    fitted = ZScoreNormaliser.fit(values)
    features = fitted.transform(values)
    np.testing.assert_allclose(features[:, 1:].mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(features[:, 1:].std(axis=0), 1.0, atol=1e-9)
    np.testing.assert_array_equal(features[:, 0], 0.0)


@pytest.mark.parametrize(
    "normaliser",
    [
        IdentityNormaliser(),
        MinMaxNormaliser.from_plugin_limits(),
        ZScoreNormaliser.fit(random_settings(np.random.default_rng(5), 30)),
    ],
)
def test_json_round_trip(normaliser):
    payload = json.loads(json.dumps(normaliser.to_dict()))
    rebuilt = normaliser_from_dict(payload)
    values = random_settings(np.random.default_rng(6), 10)
    np.testing.assert_array_equal(rebuilt.transform(values), normaliser.transform(values))


def test_bad_json_and_shapes_give_clear_errors():
    with pytest.raises(ValueError, match="unknown normaliser kind"):
        normaliser_from_dict({"kind": "robust"})
    payload = MinMaxNormaliser.from_plugin_limits().to_dict()
    payload["lower"] = payload["lower"][:5]
    with pytest.raises(ValueError, match="'lower' must hold 13 values"):
        normaliser_from_dict(payload)
    payload = ZScoreNormaliser.fit(random_settings(np.random.default_rng(7), 5)).to_dict()
    payload["columns"] = payload["columns"][::-1]
    with pytest.raises(ValueError, match="other columns"):
        normaliser_from_dict(payload)
    with pytest.raises(ValueError, match=r"shape \(n, 13\)"):
        MinMaxNormaliser.from_plugin_limits().transform(np.zeros((2, 12)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        ZScoreNormaliser.fit(np.zeros((1, 13)))
    with pytest.raises(ValueError, match="gains cannot be log-scaled"):
        MinMaxNormaliser.from_plugin_limits(["gain"])
    with pytest.raises(ValueError, match="unknown parameter kind"):
        build_normaliser({"kind": "minmax", "log_kinds": ["frequency"]}, np.zeros((2, 13)))
