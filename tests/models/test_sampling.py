"""Each word's region of the latent, and draws from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neural_eq_morphing.models.sampling import sample_latents, word_regions


def _latent(rng: np.random.Generator, posterior: bool) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "term": ["warm"] * 400 + ["bright"] * 400,
            "latent_00": np.r_[rng.normal(1.0, 0.5, 400), rng.normal(-1.0, 0.2, 400)],
            "latent_01": np.r_[rng.normal(0.0, 0.1, 400), rng.normal(0.0, 0.3, 400)],
        }
    )
    if posterior:
        frame["posterior_var_00"] = 0.75
        frame["posterior_var_01"] = 0.0
    return frame


def test_a_region_is_the_mean_and_spread_of_the_word_encodings():
    regions = word_regions(_latent(np.random.default_rng(0), False), ["latent_00", "latent_01"])
    assert regions.loc["warm", "n_rows"] == 400
    assert regions.loc["warm", "latent_00"] == pytest.approx(1.0, abs=0.08)
    assert regions.loc["warm", "spread_00"] == pytest.approx(0.5, rel=0.1)
    assert regions.loc["bright", "spread_01"] == pytest.approx(0.3, rel=0.1)


def test_a_beta_vae_region_adds_the_mean_posterior_variance():
    rng = np.random.default_rng(0)
    regions = word_regions(_latent(rng, True), ["latent_00", "latent_01"])
    # 0.5² + 0.75 = 1: the law of total variance
    assert regions.loc["warm", "spread_00"] == pytest.approx(1.0, rel=0.1)
    assert regions.loc["warm", "spread_01"] == pytest.approx(0.1, rel=0.15)


def test_draws_are_seeded_spread_as_the_region_and_bounded_for_a_tanh_latent():
    centroid, spread = np.array([0.9, 0.0]), np.array([0.5, 0.1])
    first = sample_latents(centroid, spread, 5000, np.random.default_rng(3), bounded=True)
    again = sample_latents(centroid, spread, 5000, np.random.default_rng(3), bounded=True)
    np.testing.assert_array_equal(first, again)
    assert first.max() <= 1.0
    assert first.min() >= -1.0
    free = sample_latents(centroid, spread, 5000, np.random.default_rng(3), bounded=False)
    assert free.max() > 1.0
    assert free[:, 1].std() == pytest.approx(0.1, rel=0.05)
