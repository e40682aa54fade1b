"""The perceptual loss: the dB response in torch, the C-weighting, the loss itself."""

import numpy as np
import pytest
import torch

from neural_eq_morphing.eq.normalisers import MinMaxNormaliser
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, UPPER_LIMITS, indices_of_kind
from neural_eq_morphing.eq.response import biquad_coefficients, frequency_grid
from neural_eq_morphing.eq.response import response_db as numpy_response_db
from neural_eq_morphing.models.perceptual import (
    GAIN_RANGE_DB,
    N_LOSS_POINTS,
    c_weighting_db,
    perceptual_loss,
    perceptual_loss_per_row,
    plugin_units,
    response_db,
)
from tests.conftest import random_settings

LOG2_SPACE = MinMaxNormaliser.from_plugin_limits(("freq", "q"))


def test_response_matches_the_numpy_response_model():
    features = np.random.default_rng(0).uniform(0, 1, (300, 13))
    settings = LOG2_SPACE.inverse_transform(features)
    expected = numpy_response_db(settings, frequency_grid(N_LOSS_POINTS))
    got = response_db(plugin_units(torch.tensor(features, dtype=torch.float32)))
    assert got.dtype == torch.float32
    # float32 inputs; the response itself is computed in float64.
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-3)
    exact = response_db(torch.tensor(settings))
    np.testing.assert_allclose(exact.numpy(), expected, rtol=0, atol=1e-8)


def test_biquad_coefficients_are_one_definition_for_numpy_and_torch():
    # The loss's coefficients are eq.response's, run with xp=torch: same numbers (up to the
    # two libraries' sin/cos/pow rounding), any batch dimensions, and differentiable.
    settings = random_settings(np.random.default_rng(2), 60)
    expected = biquad_coefficients(settings)
    batched = torch.tensor(settings.reshape(3, 20, 13), requires_grad=True)
    got = biquad_coefficients(batched, xp=torch)
    assert isinstance(got, torch.Tensor)
    assert got.dtype == torch.float64
    assert got.shape == (3, 20, 5, 6)
    np.testing.assert_allclose(got.detach().numpy().reshape(60, 5, 6), expected, rtol=1e-12)
    got.sum().backward()
    assert batched.grad is not None
    assert torch.isfinite(batched.grad).all()


def test_plugin_units_is_log2s_inverse_clipped_to_the_limits():
    features = torch.tensor([[-0.5] * 13, [0.25] * 13, [1.5] * 13], dtype=torch.float64)
    got = plugin_units(features).numpy()
    np.testing.assert_allclose(got[0], LOWER_LIMITS, rtol=1e-6)
    expected = LOG2_SPACE.inverse_transform(np.full((1, 13), 0.25))[0]
    np.testing.assert_allclose(got[1], expected, rtol=1e-6)  # float32 limits
    np.testing.assert_allclose(got[2], UPPER_LIMITS, rtol=1e-6)


def test_c_weighting_values_of_the_standard():
    # IEC 61672-1 table: 0 dB at 1 kHz, -6.2 dB at 20 Hz, -11.2 dB at 20 kHz, -0.8 at 63 Hz.
    values = c_weighting_db(np.array([1000.0, 20.0, 20_000.0, 63.0]))
    np.testing.assert_allclose(values, [0.0, -6.2, -11.2, -0.8], atol=0.1)


def test_loss_is_zero_for_the_target_and_grows_with_a_gain_error():
    target = torch.full((1, 4, 13), 0.5)
    assert perceptual_loss(target, target).item() == pytest.approx(0.0, abs=1e-10)
    # 1 dB more on the first peak's gain: squared dB error, weighted, over 24².
    shifted = target.clone()
    shifted[..., indices_of_kind("gain")[1]] += 1.0 / GAIN_RANGE_DB
    small = perceptual_loss(shifted, target).item()
    shifted[..., indices_of_kind("gain")[1]] += 2.0 / GAIN_RANGE_DB
    large = perceptual_loss(shifted, target).item()
    assert 0 < small < 1.0 / GAIN_RANGE_DB**2  # a band moves part of the curve by ≤ 1 dB
    assert large == pytest.approx(9 * small, rel=0.02)  # 3 dB: nine times the squared error


def test_gradient_flows_to_the_reconstruction_only():
    generator = torch.Generator().manual_seed(1)
    reconstruction = torch.rand(2, 5, 13, generator=generator, requires_grad=True)
    target = torch.rand(2, 5, 13, generator=generator, requires_grad=True)
    loss = perceptual_loss(reconstruction, target)
    assert loss.shape == (2,)
    loss.sum().backward()
    assert reconstruction.grad is not None
    assert torch.isfinite(reconstruction.grad).all()
    assert reconstruction.grad.abs().sum() > 0
    assert target.grad is None
    per_row = perceptual_loss_per_row(reconstruction, target)
    torch.testing.assert_close(per_row.mean(-1), loss)
