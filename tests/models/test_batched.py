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


def _members(decoder_head: str, seeds=(1, 2, 3), **kwargs) -> list[SemanticEQModel]:
    return [SemanticEQModel(decoder_head, seed=s, **kwargs) for s in seeds]


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
        expected = batched.layout.pack({n: p.grad for n, p in model.named_parameters()})
        scale = expected.abs().max()
        torch.testing.assert_close(batched.grad[k] / scale, expected / scale, rtol=0, atol=2e-6)
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


def test_evaluate_is_mean_over_consecutive_batches():
    models = _members("normalised", seeds=(4, 5))
    batched = BatchedSemanticEQ.from_models(models)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(37, 13, generator=generator)
    labels = torch.randint(0, 3, (37,), generator=generator)
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
    with pytest.raises(ValueError, match="model_config"):
        BatchedSemanticEQ.from_models(
            [SemanticEQModel("plugin_units"), SemanticEQModel("normalised")]
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
