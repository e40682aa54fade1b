import pytest
import torch

from neural_eq_morphing.models import (
    DECODER_HEADS,
    BatchedSemanticEQ,
    ParameterLayout,
    SemanticEQModel,
    reconstruction_loss,
    supervised_contrastive_loss,
)
from neural_eq_morphing.models.losses import kl_divergence
from neural_eq_morphing.models.perceptual import perceptual_loss


def _members(decoder_head: str, seeds=(1, 2, 3), **kwargs) -> list[SemanticEQModel]:
    return [SemanticEQModel(decoder_head, seed=s, **kwargs) for s in seeds]


def _assert_same_gradient(batched: BatchedSemanticEQ, k: int, model: SemanticEQModel) -> None:
    """Member ``k``'s batched gradient equals autograd's on ``model`` (after backward)."""
    expected = batched.layout.pack({n: p.grad for n, p in model.named_parameters()})
    scale = expected.abs().max()
    torch.testing.assert_close(batched.grad[k] / scale, expected / scale, rtol=0, atol=2e-6)


def _with_masks(model: SemanticEQModel, masks: torch.Tensor) -> None:
    """Replace the model's dropout layers by multiplication with fixed (scaled) masks."""
    blocks = [*model.encoder.blocks, *model.decoder.blocks]
    start = 0
    for block in blocks:
        width = block.linear1.out_features
        mask = masks[:, start : start + width]
        start += width
        block.dropout.forward = lambda t, mask=mask: t * mask  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("decoder_head", "consistent"),
    [("normalised", False), ("plugin_units", False), ("plugin_units", True)],
)
def test_hand_written_gradients_match_autograd(decoder_head, consistent):
    generator = torch.Generator().manual_seed(0)
    models = _members(decoder_head)
    mean = torch.randn(13, generator=generator, dtype=torch.float64).float()
    std = (torch.rand(13, generator=generator) + 0.5).float()
    batched = BatchedSemanticEQ.from_models(
        models, zscore_mean=mean, zscore_std=std, recon_in_consistent_units=consistent
    )
    members, rows = 3, 24
    x = torch.rand(members, rows, 13, generator=generator)
    labels = torch.randint(0, 4, (members, rows), generator=generator)
    labels[:, 0] = 17  # an anchor without positives
    masks = (torch.rand(members, rows, batched.dropout_width, generator=generator) >= 0.1) / 0.9
    weight = 0.3
    losses = batched.loss_and_grad(x, labels, masks, weight)
    for k, model in enumerate(models):
        model.train()
        _with_masks(model, masks[k])
        _, projection, output = model(x[k])
        recon = reconstruction_loss(
            output,
            x[k],
            decoder_head,
            consistent_units=consistent,
            zscore_mean=mean,
            zscore_std=std,
        )
        contrastive = supervised_contrastive_loss(projection, labels[k], 0.1)
        (recon + weight * contrastive).backward()
        _assert_same_gradient(batched, k, model)
        torch.testing.assert_close(losses.reconstruction[k], recon.detach(), rtol=1e-5, atol=0)
        torch.testing.assert_close(
            losses.contrastive[k], contrastive.detach(), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("decoder_head", DECODER_HEADS)
def test_export_import_round_trip(decoder_head):
    models = _members(decoder_head, dropout=0.1)
    batched = BatchedSemanticEQ.from_models(models)
    x = torch.rand(64, 13, generator=torch.Generator().manual_seed(0))
    latent, projection, output = batched.forward(x)
    # Batched and plain matmuls round differently; plug-in units are dB / Hz / Q.
    output_atol = 1e-4 if decoder_head == "plugin_units" else 1e-6
    for k in range(3):
        exported = batched.export(k)
        assert not exported.training
        assert exported.model_config == models[k].model_config
        for name, value in exported.state_dict().items():
            assert torch.equal(value, models[k].state_dict()[name]), name
        with torch.no_grad():
            got = exported(x)
        torch.testing.assert_close(got[0], latent[k], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[1], projection[k], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[2], output[k], rtol=1e-5, atol=output_atol)
    # ... and back: loading a member overwrites it exactly.
    batched.load_member(0, models[2])
    assert torch.equal(batched.flat[0], batched.flat[2])


def test_layout_pack_unpack_is_exact():
    model = SemanticEQModel("plugin_units", seed=9)
    layout = ParameterLayout(model.model_config)
    state = model.state_dict()
    row = layout.pack(state)
    assert row.shape == (layout.size,)
    assert layout.size == sum(p.numel() for p in model.parameters())
    unpacked = layout.unpack(row)
    assert unpacked.keys() == state.keys()
    assert all(torch.equal(unpacked[k], state[k]) for k in state)


def _validation_rows() -> tuple[torch.Tensor, torch.Tensor]:
    """37 rows (two batches of 16 and one of 5) and their labels of 3 terms."""
    generator = torch.Generator().manual_seed(1)
    return torch.rand(37, 13, generator=generator), torch.randint(0, 3, (37,), generator=generator)


def test_evaluate_is_mean_over_consecutive_batches():
    models = _members("normalised", seeds=(4, 5))
    batched = BatchedSemanticEQ.from_models(models)
    x, labels = _validation_rows()
    losses = batched.evaluate(x, labels, batch_size=16)
    for k, model in enumerate(models):
        model.eval()
        recon, contrastive = [], []
        with torch.no_grad():
            for start in range(0, 37, 16):
                xb, yb = x[start : start + 16], labels[start : start + 16]
                _, projection, output = model(xb)
                recon.append(reconstruction_loss(output, xb, "normalised"))
                contrastive.append(supervised_contrastive_loss(projection, yb))
        torch.testing.assert_close(losses.reconstruction[k], torch.stack(recon).mean())
        torch.testing.assert_close(losses.contrastive[k], torch.stack(contrastive).mean())


def test_stacking_requires_one_config():
    with pytest.raises(ValueError, match="only the normalised and separate heads"):
        BatchedSemanticEQ.from_models(
            [SemanticEQModel("plugin_units"), SemanticEQModel("normalised")]
        )
    with pytest.raises(ValueError, match="model_config"):
        BatchedSemanticEQ.from_models(
            [SemanticEQModel("normalised"), SemanticEQModel("normalised", latent_dim=8)]
        )
    with pytest.raises(ValueError, match="z-score"):
        BatchedSemanticEQ.from_models(
            [SemanticEQModel("plugin_units")], recon_in_consistent_units=True
        )
    with pytest.raises(ValueError, match="plugin_units decoder head only"):
        BatchedSemanticEQ.from_models(
            [SemanticEQModel("normalised")],
            recon_in_consistent_units=True,
            zscore_mean=torch.zeros(13),
            zscore_std=torch.ones(13),
        )


# ------------------------------------------- the designs beyond Log 2 (issue 14)
def _draws(batched: BatchedSemanticEQ, members: int, rows: int, latent: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(members, rows, 13, generator=generator)
    labels = torch.randint(0, 4, (members, rows), generator=generator)
    masks = (torch.rand(members, rows, batched.dropout_width, generator=generator) >= 0.1) / 0.9
    noise = torch.randn(members, rows, latent, generator=generator)
    return x, labels, masks, noise


@pytest.mark.parametrize(
    ("decoder_head", "perceptual", "variational"),
    [
        ("separate", 0.0, False),
        ("normalised", 1.0, False),
        ("separate", 0.7, False),
        ("normalised", 0.0, True),
        ("separate", 0.5, True),
    ],
)
def test_new_designs_gradients_match_autograd(decoder_head, perceptual, variational):
    """Autograd output stage (separate head, perceptual loss) and the hand-written
    sampling and KL gradient of a β-VAE give autograd's gradient on the module."""
    latent_dim, weight, kl_weight = 4, 0.3, 0.05
    models = _members(decoder_head, latent_dim=latent_dim, variational=variational)
    batched = BatchedSemanticEQ.from_models(models, perceptual_weight=perceptual)
    x, labels, masks, noise = _draws(batched, 3, 24, latent_dim)
    losses = batched.loss_and_grad(
        x, labels, masks, weight, noise=noise if variational else None, kl_weight=kl_weight
    )
    for k, model in enumerate(models):
        model.train()
        _with_masks(model, masks[k])
        z, mean, log_variance = model.sample(x[k], noise[k])
        output = model.decode(z)
        recon = reconstruction_loss(output, x[k], decoder_head)
        if perceptual:
            recon = recon + perceptual * perceptual_loss(output, x[k])
        contrastive = supervised_contrastive_loss(model.project(z), labels[k], 0.1)
        total = recon + weight * contrastive
        kl = kl_divergence(mean, log_variance) if variational else torch.zeros(())
        (total + kl_weight * kl).backward()
        _assert_same_gradient(batched, k, model)
        torch.testing.assert_close(losses.reconstruction[k], recon.detach(), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(losses.kl[k], kl.detach(), rtol=1e-5, atol=1e-7)


def test_new_designs_padded_rows_contribute_nothing():
    """With a row mask, each member's losses and gradient are those of its rows alone."""
    latent_dim = 3
    models = _members("separate", latent_dim=latent_dim, variational=True)
    batched = BatchedSemanticEQ.from_models(models, perceptual_weight=0.5)
    x, labels, masks, noise = _draws(batched, 3, 9, latent_dim, seed=4)
    sizes = [5, 9, 0]
    valid = torch.arange(9) < torch.tensor(sizes).unsqueeze(1)
    losses = batched.loss_and_grad(x, labels, masks, 0.3, valid, noise=noise, kl_weight=0.1)
    grad = batched.grad.clone()
    assert losses.reconstruction[2] == 0
    assert losses.kl[2] == 0
    assert not grad[2].any()
    for k in (0, 1):
        solo = BatchedSemanticEQ(
            batched.model_config, batched.flat[k : k + 1].clone(), perceptual_weight=0.5
        )
        b = sizes[k]
        one = slice(k, k + 1)
        expected = solo.loss_and_grad(
            x[one, :b], labels[one, :b], masks[one, :b], 0.3, noise=noise[one, :b], kl_weight=0.1
        )
        torch.testing.assert_close(grad[k], solo.grad[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(losses.reconstruction[k], expected.reconstruction[0])
        torch.testing.assert_close(losses.kl[k], expected.kl[0])


def test_evaluate_measures_the_designs_own_losses():
    """Validation uses eval mode: the posterior mean, the clipped separate head, and the
    same reconstruction loss (with the perceptual term) and KL as training."""
    models = _members("separate", seeds=(4, 5), latent_dim=3, variational=True)
    batched = BatchedSemanticEQ.from_models(models, perceptual_weight=0.5)
    x, labels = _validation_rows()
    losses = batched.evaluate(x, labels, batch_size=16)
    for k, model in enumerate(models):
        model.eval()
        recon, kl = [], []
        with torch.no_grad():
            for start in range(0, 37, 16):
                xb = x[start : start + 16]
                _, mean, log_variance = model.sample(xb)
                output = model.decode(mean)
                assert output.min() >= 0
                assert output.max() <= 1
                recon.append(
                    reconstruction_loss(output, xb, "separate") + 0.5 * perceptual_loss(output, xb)
                )
                kl.append(kl_divergence(mean, log_variance))
        torch.testing.assert_close(losses.reconstruction[k], torch.stack(recon).mean())
        torch.testing.assert_close(losses.kl[k], torch.stack(kl).mean())


def test_variational_step_needs_its_noise_and_perceptual_needs_normalised_space():
    batched = BatchedSemanticEQ.from_models(_members("normalised", variational=True))
    x = torch.rand(3, 4, 13)
    with pytest.raises(ValueError, match="noise"):
        batched.loss_and_grad(x, torch.zeros(3, 4, dtype=torch.long), None, 0.1)
    with pytest.raises(ValueError, match="normalised space"):
        BatchedSemanticEQ.from_models(_members("plugin_units"), perceptual_weight=1.0)


def test_a_mixed_ensemble_gives_each_member_its_own_head_and_loss():
    """Normalised and separate heads, with and without the perceptual loss, in one
    ensemble: each member's gradient is autograd's on its own module and loss."""
    heads, perceptual = ("normalised", "separate", "separate"), (0.0, 0.0, 0.8)
    models = [SemanticEQModel(head, seed=k) for k, head in enumerate(heads)]
    batched = BatchedSemanticEQ.from_models(models, perceptual_weight=list(perceptual))
    assert batched.member_heads == list(heads)
    x, labels, masks, _ = _draws(batched, 3, 16, 32, seed=7)
    losses = batched.loss_and_grad(x, labels, masks, 0.3)
    for k, model in enumerate(models):
        model.train()
        _with_masks(model, masks[k])
        _, projection, output = model(x[k])
        recon = reconstruction_loss(output, x[k], heads[k])
        if perceptual[k]:
            recon = recon + perceptual[k] * perceptual_loss(output, x[k])
        (recon + 0.3 * supervised_contrastive_loss(projection, labels[k], 0.1)).backward()
        _assert_same_gradient(batched, k, model)
        torch.testing.assert_close(losses.reconstruction[k], recon.detach(), rtol=1e-5, atol=1e-7)
        exported = batched.export(k)
        assert exported.model_config["decoder_head"] == heads[k]
