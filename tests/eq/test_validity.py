import numpy as np
import pytest

from neural_eq_morphing.eq.parameters import LOWER_LIMITS, PARAMETER_NAMES, UPPER_LIMITS
from neural_eq_morphing.eq.validity import range_report

INDEX = {name: i for i, name in enumerate(PARAMETER_NAMES)}


def test_all_valid():
    settings = np.stack([LOWER_LIMITS, UPPER_LIMITS, (LOWER_LIMITS + UPPER_LIMITS) / 2])
    report = range_report(settings)
    assert report["n_settings"] == 3
    assert report["valid_share"] == 1.0
    assert set(report["by_band"].values()) == {1.0}
    assert report["worst"] == []


def test_out_of_range_values_are_counted_per_band_kind_and_listed_worst_first():
    settings = np.tile((LOWER_LIMITS + UPPER_LIMITS) / 2, (4, 1))
    settings[0, INDEX["high_shelf_freq_hz"]] = 1.6e6  # ~1.9 decades above 20 kHz
    settings[1, INDEX["peak1_freq_hz"]] = 50.0  # below 82 Hz
    settings[2, INDEX["low_shelf_gain_db"]] = np.nan
    report = range_report(settings, n_worst=5)
    assert report["valid_share"] == pytest.approx(0.25)
    assert report["by_band"]["high_shelf"] == pytest.approx(0.75)
    assert report["by_band"]["peak1"] == pytest.approx(0.75)
    assert report["by_band"]["peak2"] == 1.0
    assert report["by_kind"]["freq"] == pytest.approx(1 - 2 / 20)
    assert report["by_kind"]["gain"] == pytest.approx(1 - 1 / 20)
    assert report["by_parameter"]["high_shelf_freq_hz"]["max"] == pytest.approx(1.6e6)
    worst = [(w["parameter"], w["row"]) for w in report["worst"]]
    assert worst == [("low_shelf_gain_db", 2), ("high_shelf_freq_hz", 0), ("peak1_freq_hz", 1)]
    assert report["worst"][1]["upper_limit"] == 20000.0
