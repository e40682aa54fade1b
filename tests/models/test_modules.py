import json

import numpy as np
import pytest
import torch

from neural_eq_morphing.eq.normalisers import MinMaxNormaliser
from neural_eq_morphing.eq.parameters import LOWER_LIMITS, UPPER_LIMITS, indices_of_kind
from neural_eq_morphing.models import DECODER_HEADS, SemanticEQModel, build_model
from neural_eq_morphing.models.heads import decoder_output, head_constants, separate_head
from tests.models.conftest import plain_model


@pytest.mark.parametrize("decoder_head", DECODER_HEADS)
def test_shapes(decoder_head):
    model = SemanticEQModel(decoder_head, seed=0).eval()
    x = torch.rand(7, 13)
    latent, projection, reconstruction = model(x)
    assert latent.shape == (7, 32)
    assert projection.shape == (7, 128)
    assert reconstruction.shape == (7, 13)
    assert model.encode(x).shape == (7, 32)
    assert model.decode(latent).shape == (7, 13)
    # Leading batch dimensions pass through.
    assert model(torch.rand(2, 3, 13))[2].shape == (2, 3, 13)


def test_latent_is_tanh_bounded():
    model = SemanticEQModel("normalised", seed=1).eval()
    latent = model.encode(torch.randn(64, 13) * 100)
    assert torch.all(latent.abs() <= 1.0)


def _extreme_latents() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    random = torch.randn(200, 32, generator=generator)
    return torch.cat(
        [
            random,
            random * 1e3,
            torch.full((1, 32), 1e6),
            torch.full((1, 32), -1e6),
            torch.zeros(1, 32),
            torch.sign(random) * 50,
        ]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normalised_decoder_in_unit_interval_for_any_latent(seed):
    model = SemanticEQModel("normalised", seed=seed).eval()
    with torch.no_grad():
        output = model.decode(_extreme_latents())
    assert torch.isfinite(output).all()
    assert output.min() >= 0.0
    assert output.max() <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plugin_units_heads_inside_plugin_limits(seed):
    model = SemanticEQModel("plugin_units", seed=seed).eval()
    with torch.no_grad():
        output = model.decode(_extreme_latents()).double().numpy()
    assert np.isfinite(output).all()
    # float32 round-off at the limits only.
    tolerance = 1e-6 * np.maximum(np.abs(LOWER_LIMITS), np.abs(UPPER_LIMITS))
    assert np.all(output >= LOWER_LIMITS - tolerance)
    assert np.all(output <= UPPER_LIMITS + tolerance)


def test_plugin_units_head_formulas():
    slope, scale, shift = head_constants("plugin_units")
    o = torch.linspace(-8, 8, 101)[:, None].expand(101, 13)
    out = torch.addcmul(shift, torch.sigmoid(o * slope), scale)
    gains, freqs, qs = indices_of_kind("gain"), indices_of_kind("freq"), indices_of_kind("q")
    torch.testing.assert_close(out[:, gains], 12 * torch.tanh(o[:, gains]), atol=1e-5, rtol=0)
    lower = torch.tensor(LOWER_LIMITS, dtype=torch.float32)
    upper = torch.tensor(UPPER_LIMITS, dtype=torch.float32)
    expected_f = lower[freqs] + torch.sigmoid(o[:, freqs]) * (upper[freqs] - lower[freqs])
    torch.testing.assert_close(out[:, freqs], expected_f)
    torch.testing.assert_close(out[:, qs], torch.sigmoid(o[:, qs]) * 9.9 + 0.1)


def test_normalised_head_is_plain_sigmoid():
    o = torch.randn(2, 5, 13, generator=torch.Generator().manual_seed(3)) * 10
    for training in (True, False):
        assert torch.equal(decoder_output(o, ["normalised"] * 2, training), torch.sigmoid(o))
    # The network's decoder ends in it: the plain module's last linear layer, then sigmoid.
    plain, _ = plain_model("normalised", seed=3, dropout=0.0)
    model = SemanticEQModel(
        "normalised", seed=0, hidden_dims=(16, 24, 16), latent_dim=8, projection_dim=12
    )
    model.load_state_dict({"flat": model.layout.flat_from_state_dict(plain.state_dict())[None]})
    latent = torch.randn(5, 8)
    with torch.no_grad():
        h = latent
        for block in plain.eval().decoder.blocks:
            h = block(h)
        expected = torch.sigmoid(plain.decoder.head(h))
        assert torch.equal(model.eval().decode(latent), expected)


def test_model_config_round_trip_is_json_able():
    model = SemanticEQModel("plugin_units", seed=4, dropout=0.2)
    config = json.loads(json.dumps(model.model_config))
    rebuilt = build_model(config)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(3, 13)
    model.eval()
    rebuilt.eval()
    for a, b in zip(model(x), rebuilt(x), strict=True):
        assert torch.equal(a, b)
    assert rebuilt.model_config == model.model_config


def test_build_model_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown model config"):
        build_model({"decoder_head": "normalised", "width": 3})
    with pytest.raises(ValueError, match="lacks the field 'decoder_head'"):
        build_model({"latent_dim": 32})
    with pytest.raises(ValueError, match="decoder_head"):
        SemanticEQModel("log3")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variant", "decoder_head"), [("log1", "plugin_units"), ("log2", "normalised")]
)
def test_build_model_reads_configs_written_before_the_rename(variant, decoder_head):
    model = SemanticEQModel(decoder_head, seed=2, hidden_dims=(8, 16, 8), latent_dim=4)
    old = {**model.model_config, "variant": variant}
    del old["decoder_head"]
    rebuilt = build_model(old)
    assert rebuilt.model_config == model.model_config
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(5, 13)
    assert torch.equal(rebuilt.eval()(x)[2], model.eval()(x)[2])
    with pytest.raises(ValueError, match="unknown model variant"):
        build_model({**old, "variant": "log3"})
    with pytest.raises(ValueError, match="both"):
        build_model({**old, "decoder_head": decoder_head})


def test_state_dict_holds_only_learnable_parameters():
    model = SemanticEQModel("plugin_units", seed=0)
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()} == {"flat"}
    assert model.flat.shape == (1, model.layout.size)
    assert not list(model.buffers())


def test_separate_head_formulas():
    """Gains 12·tanh, frequencies read as log10(Hz), Q 0.99·softplus + 0.1, all expressed
    in Log 2's normalised space."""
    o = torch.linspace(-3, 5, 41, dtype=torch.float64)[:, None].expand(41, 13)
    out = separate_head(o).numpy()
    gains, freqs, qs = indices_of_kind("gain"), indices_of_kind("freq"), indices_of_kind("q")
    settings = np.empty((41, 13))
    settings[:, gains] = 12 * np.tanh(o[:, gains].numpy())
    settings[:, freqs] = 10.0 ** o[:, freqs].numpy()
    settings[:, qs] = 0.99 * np.log1p(np.exp(o[:, qs].numpy())) + 0.1
    expected = MinMaxNormaliser.from_plugin_limits(("freq", "q")).transform(settings)
    np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6)  # float32 limits


@pytest.mark.parametrize("seed", [0, 1])
def test_separate_heads_are_clipped_in_eval_mode_only(seed):
    model = SemanticEQModel("separate", seed=seed, dropout=0.0)
    with torch.no_grad():
        raw = model.train().decode(_extreme_latents())
        clipped = model.eval().decode(_extreme_latents())
    assert raw.min() < 0 or raw.max() > 1  # the unbounded frequency head goes past
    assert clipped.min() >= 0
    assert clipped.max() <= 1
    torch.testing.assert_close(clipped, raw.clamp(0, 1))


def test_variational_latent():
    model = SemanticEQModel("normalised", seed=5, latent_dim=2, variational=True, dropout=0.0)
    x = torch.rand(6, 13)
    noise = torch.randn(6, 2)
    with torch.no_grad():
        mean, log_variance = model.posterior(x)
        assert mean.shape == log_variance.shape == (6, 2)
        assert torch.equal(model.eval().encode(x), mean)
        z, _, _ = model.eval().sample(x, noise)
        assert torch.equal(z, mean)  # eval mode: the posterior mean
        z, _, _ = model.train().sample(x, noise)
        torch.testing.assert_close(z, mean + torch.exp(0.5 * log_variance) * noise)
    # to_latent gives the mean and the log-variance side by side.
    assert model.layout.views(model.flat)["encoder.to_latent.w"].shape == (1, 64, 4)
    with pytest.raises(ValueError, match="variational"):
        SemanticEQModel("normalised").posterior(x)
    # A config written before `variational` existed is a deterministic model.
    old = dict(SemanticEQModel("normalised").model_config)
    del old["variational"]
    assert build_model(old).variational is False
