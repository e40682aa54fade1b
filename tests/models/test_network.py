"""The network: one definition for ``M`` members, equal to the plain ``nn.Module`` one."""

import pytest
import torch

from neural_eq_morphing.models import DECODER_HEADS, ParameterLayout, SemanticEQModel, build_model
from neural_eq_morphing.models.heads import decoder_output
from neural_eq_morphing.models.losses import Objective
from tests.models.conftest import plain_model, with_masks

DIMS = {"hidden_dims": (16, 24, 16), "latent_dim": 8, "projection_dim": 12}


def _config(decoder_head: str = "normalised", **overrides) -> dict:
    return SemanticEQModel(decoder_head, **{**DIMS, **overrides}).model_config


def _from_plain(plain: torch.nn.Module, **kwargs) -> SemanticEQModel:
    """A one-member network holding the plain module's weights (first-format keys)."""
    model = SemanticEQModel(plain.decoder_head, dropout=0.1, seed=0, **{**DIMS, **kwargs})
    model.load_state_dict({"flat": model.layout.flat_from_state_dict(plain.state_dict())[None]})
    return model


def _plain_gradient(layout: ParameterLayout, plain: torch.nn.Module) -> torch.Tensor:
    return layout.flat_from_state_dict({n: p.grad for n, p in plain.named_parameters()})


def _assert_close_relative(got: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    scale = expected.abs().max()
    assert scale > 0
    torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=atol)


def _draws(members: int, rows: int, width: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(members, rows, 13, generator=generator)
    labels = torch.randint(0, 4, (members, rows), generator=generator)
    masks = (torch.rand(members, rows, width, generator=generator) >= 0.1) / 0.9
    return x, labels, masks


# --------------------------------------------------- the plain nn.Module definition
@pytest.mark.parametrize("decoder_head", DECODER_HEADS)
def test_network_equals_the_plain_module_definition(decoder_head):
    plain, _ = plain_model(decoder_head, seed=3)
    model = _from_plain(plain)
    x = torch.rand(40, 13, generator=torch.Generator().manual_seed(1)) * 1.4 - 0.2
    with torch.no_grad():
        expected = plain.eval()(x)
        got = model.eval()(x)
        ran = model.run(x[None])
        # The same member inside an ensemble (the batched LayerNorm path).
        ensemble = SemanticEQModel(decoder_head, members=3, seed=0, **DIMS)
        ensemble.flat[1] = model.flat[0]
        batched = ensemble.run(x.expand(3, -1, -1))
    assert ran.posterior is None
    for name, a, b, c, e in zip(
        ("latent", "projection", "output"),
        got,
        ran[:3],
        (t[1] for t in batched[:3]),
        expected,
        strict=True,
    ):
        torch.testing.assert_close(a, e, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(b[0], e, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(c, e, rtol=1e-6, atol=1e-6, msg=name)
    if decoder_head == "separate":  # eval mode: clipped
        assert expected[2].min() >= 0
        assert expected[2].max() <= 1


@pytest.mark.parametrize("decoder_head", DECODER_HEADS)
def test_training_forward_and_gradient_equal_the_plain_modules(decoder_head):
    """Training mode: the dropout masks sit where the plain blocks' dropout layers are,
    the separate heads are unclipped, and autograd's gradient of the flat parameter is
    the plain module's, piece by piece."""
    plain, _ = plain_model(decoder_head, seed=4)
    model = _from_plain(plain)
    x, _, masks = _draws(1, 24, sum(model.layout.dropout_widths), seed=2)
    x = x * 1.4 - 0.2
    weights = torch.randn(3, 24, 13, generator=torch.Generator().manual_seed(5))
    plain.train()
    with_masks(plain, masks[0])
    latent, projection, output = plain(x[0])
    ((output * weights[0]).sum() + latent.sum() + (projection**2).sum()).backward()
    fwd = model.run(x, masks=masks, training=True)
    ((fwd.output[0] * weights[0]).sum() + fwd.latent.sum() + (fwd.projection**2).sum()).backward()
    torch.testing.assert_close(fwd.output[0], output.detach(), rtol=1e-6, atol=1e-6)
    if decoder_head == "separate":  # training: the unbounded frequency head goes past
        assert output.min() < 0 or output.max() > 1
    _assert_close_relative(model.flat.grad[0], _plain_gradient(model.layout, plain), 1e-6)


def test_layout_pieces_are_the_plain_modules_tensors():
    plain, _ = plain_model("normalised", seed=5)
    layout = ParameterLayout(_config())
    state = plain.state_dict()
    # The plain module's registration order: the order of the initial draws.
    assert [piece.key for piece, _ in layout.module_order] == list(state)
    assert layout.size == sum(p.numel() for p in plain.parameters())
    assert layout.dropout_widths == [16, 24, 16, 16, 24, 16]
    flat = layout.flat_from_state_dict(state)[None]
    views = layout.views(flat)
    assert list(views) == [entry.name for entry in layout.entries]
    for piece, entry in layout.module_order:
        block = views[entry.name][0][:, piece.start : piece.start + piece.columns]
        expected = state[piece.key].t() if piece.is_weight else state[piece.key][None]
        assert torch.equal(block, expected), piece.key
    # Views, not copies, that tile the row exactly once in order.
    assert torch.equal(torch.cat([v.reshape(1, -1) for v in views.values()], dim=1), flat)
    views["decoder.head.b"].fill_(7.0)
    assert (flat[0, -13:] == 7.0).all()
    assert (flat[0, :-13] != 7.0).all()


def test_layout_refuses_weights_and_buffers_that_do_not_fit():
    plain, _ = plain_model("normalised", seed=5)
    layout = ParameterLayout(_config())
    state = dict(plain.state_dict())
    del state["projection.bias"]
    with pytest.raises(ValueError, match=r"missing \['projection.bias'\], unknown \[\]"):
        layout.flat_from_state_dict(state)
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        layout.flat_from_state_dict({**plain.state_dict(), "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="flat parameter of shape"):
        layout.views(torch.zeros(2, layout.size + 1))
    with pytest.raises(ValueError, match="flat parameter of shape"):
        layout.views(torch.zeros(layout.size))


def test_variational_layout_gives_mean_and_log_variance():
    layout = ParameterLayout(_config(variational=True))
    deterministic = ParameterLayout(_config())
    shapes = {e.name: e.shape for e in layout.entries}
    assert shapes["encoder.to_latent.w"] == (16, 16)
    assert shapes["projection.w"] == (8, 12)
    assert shapes["decoder.blocks.0.w_in"] == (8, 32)  # linear1 and skip, 16 each
    assert layout.size == deterministic.size + 16 * 8 + 8


# ------------------------------------------------------------------ initialisation
@pytest.mark.parametrize("seed", [0, 11])
def test_seeded_init_matches_torch_default_init_of_the_plain_module(seed):
    """Same draws, same order as torch's default init of the plain modules under
    ``torch.manual_seed(seed)``: and no more, as the generator continues from there."""
    plain, after_init = plain_model("plugin_units", seed)
    layout = ParameterLayout(_config("plugin_units"))
    expected = layout.flat_from_state_dict(plain.state_dict())
    assert torch.equal(SemanticEQModel("plugin_units", seed=seed, **DIMS).flat[0], expected)
    generator = torch.Generator().manual_seed(seed)
    assert torch.equal(layout.initial_row(generator), expected)
    assert torch.equal(generator.get_state(), after_init.get_state())
    # Unseeded: the same draws from torch's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        assert torch.equal(SemanticEQModel("plugin_units", **DIMS).flat[0], expected)


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = SemanticEQModel("normalised", seed=5).flat
    b = SemanticEQModel("normalised", seed=5).flat
    c = SemanticEQModel("normalised", seed=6).flat
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # LayerNorms start at ones and zeros, linear layers from random draws.
    views = SemanticEQModel("normalised", seed=5).layout.views(a.detach())
    assert (views["encoder.blocks.0.gamma1"] == 1).all()
    assert (views["decoder.blocks.2.beta2"] == 0).all()
    assert views["encoder.blocks.0.w_in"].std() > 0


def test_initialised_draws_each_member_from_its_own_generator():
    config = _config(dropout=0.1)
    seeds = [4, 9, 4]
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    state = torch.random.get_rng_state()
    model = SemanticEQModel.initialised(config, generators, ["normalised", "separate", "separate"])
    assert torch.equal(torch.random.get_rng_state(), state)
    assert model.members == 3
    assert model.member_heads == ["normalised", "separate", "separate"]
    assert model.model_config == config
    for k, seed in enumerate(seeds):
        plain, after_init = plain_model("normalised", seed)
        assert torch.equal(model.flat[k], model.layout.flat_from_state_dict(plain.state_dict()))
        # Each generator continues after its member's draws (training draws on from it).
        assert torch.equal(generators[k].get_state(), after_init.get_state())
    assert torch.equal(model.flat[0], model.flat[2])
    assert not torch.equal(model.flat[0], model.flat[1])


# ------------------------------------------------------------------------ ensembles
@pytest.mark.parametrize("decoder_head", DECODER_HEADS)
def test_member_round_trip(decoder_head):
    generators = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    ensemble = SemanticEQModel.initialised(_config(decoder_head, dropout=0.1), generators)
    ensemble.eval()
    x = torch.rand(64, 13, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fwd = ensemble.run(x.expand(3, -1, -1))
        shared = ensemble(x)  # (B, d) inputs are shared by all members
    for got, expected in zip(shared, fwd[:3], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for k in range(3):
        member = ensemble.member(k)
        assert not member.training
        assert member.members == 1
        assert member.model_config == ensemble.model_config
        assert torch.equal(member.flat[0], ensemble.flat[k])
        with torch.no_grad():
            got = member(x)
        for name, a, b in zip(("latent", "projection", "output"), got, fwd[:3], strict=True):
            torch.testing.assert_close(a, b[k], rtol=1e-6, atol=1e-6, msg=name)
        # A copy: training it leaves the ensemble alone.
        with torch.no_grad():
            member.flat.add_(1.0)
        assert not torch.equal(member.flat[0], ensemble.flat[k])


def test_a_mixed_ensemble_gives_each_member_its_own_head_and_loss():
    """Normalised and separate heads, with and without the perceptual loss, in one
    ensemble: each member's output and gradient are those of that member alone."""
    heads, perceptual = ["normalised", "separate", "separate"], [0.0, 0.0, 0.8]
    generators = [torch.Generator().manual_seed(k) for k in range(3)]
    ensemble = SemanticEQModel.initialised(_config(dropout=0.1), generators, heads)
    x, labels, masks = _draws(3, 16, sum(ensemble.layout.dropout_widths), seed=7)
    x = x * 1.4 - 0.2
    objective = Objective.of(0.1, 3, perceptual_weight=perceptual)
    fwd = ensemble.run(x, masks=masks, training=True)
    losses = objective.losses(fwd, x, labels)
    (losses.reconstruction + 0.3 * losses.contrastive).sum().backward()
    with torch.no_grad():
        evaluated = ensemble.run(x).output
    for k, head in enumerate(heads):
        member = ensemble.member(k)
        assert member.model_config["decoder_head"] == head
        assert member.member_heads == [head]
        with torch.no_grad():
            torch.testing.assert_close(member(x[k])[2], evaluated[k], rtol=1e-6, atol=1e-6)
        own = member.run(x[k : k + 1], masks=masks[k : k + 1], training=True)
        alone = Objective.of(0.1, 1, perceptual_weight=perceptual[k]).losses(
            own, x[k : k + 1], labels[k : k + 1]
        )
        (alone.reconstruction + 0.3 * alone.contrastive).sum().backward()
        torch.testing.assert_close(fwd.output[k], own.output[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(losses.reconstruction[k], alone.reconstruction[0])
        _assert_close_relative(ensemble.flat.grad[k], member.flat.grad[0], 2e-6)
    # The heads differ: the separate members' training outputs leave [0, 1], but their
    # evaluated ones are clipped; the normalised member's are a sigmoid's.
    assert fwd.output[1:].detach().min() < 0 or fwd.output[1:].detach().max() > 1
    assert evaluated.min() >= 0
    assert evaluated.max() <= 1
    assert fwd.output[0].detach().min() > 0
    assert fwd.output[0].detach().max() < 1


def test_mixing_plugin_units_with_normalised_is_refused():
    with pytest.raises(ValueError, match="only the normalised and separate heads"):
        SemanticEQModel("normalised", members=2, member_heads=["plugin_units", "normalised"])
    with pytest.raises(ValueError, match="only the normalised and separate heads"):
        SemanticEQModel("plugin_units", members=2, member_heads=["separate", "normalised"])
    with pytest.raises(ValueError, match="only the normalised and separate heads"):
        decoder_output(torch.zeros(2, 3, 13), ["plugin_units", "separate"], training=False)
    with pytest.raises(ValueError, match="member_heads needs 3 heads"):
        SemanticEQModel("normalised", members=3, member_heads=["normalised"])
    with pytest.raises(ValueError, match="decoder_head"):
        SemanticEQModel("normalised", members=2, member_heads=["normalised", "log2"])
    with pytest.raises(ValueError, match="members must be at least 1"):
        SemanticEQModel("normalised", members=0)
    # Normalised-space heads mix, in any order, under either model-level head.
    assert SemanticEQModel("separate", members=2, member_heads=["normalised", "separate"])


def test_ensemble_inputs_need_their_member_dimension():
    ensemble = SemanticEQModel("normalised", members=3, seed=0, **DIMS).eval()
    with pytest.raises(ValueError, match=r"ensemble of 3 members needs inputs \(M, B, d\)"):
        ensemble(torch.rand(2, 5, 13))
    with pytest.raises(ValueError, match="ensemble of 3 members"):
        ensemble(torch.rand(3, 2, 5, 13))
    with torch.no_grad():
        latent = ensemble.encode(torch.rand(3, 5, 13))
    assert latent.shape == (3, 5, 8)
    assert ensemble.decode(latent).shape == (3, 5, 13)
    assert ensemble.project(latent).shape == (3, 5, 12)


def test_build_model_passes_members_and_heads():
    config = _config()
    model = build_model(config, members=2, member_heads=["separate", "normalised"], seed=1)
    assert model.members == 2
    assert model.member_heads == ["separate", "normalised"]
    assert torch.equal(model.flat, SemanticEQModel("normalised", members=2, seed=1, **DIMS).flat)
