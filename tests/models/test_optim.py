"""The optimiser path of training: ``torch.optim.Adam`` and ``ReduceLROnPlateau`` per member."""

import numpy as np
import pytest
import torch

from neural_eq_morphing.models import (
    BatchedSemanticEQ,
    SemanticEQModel,
    TrainingConfig,
    reconstruction_loss,
    supervised_contrastive_loss,
    train,
)
from neural_eq_morphing.models.training import MemberAdam, initial_models
from tests.models.conftest import design_training

SMALL = {"hidden_dims": [16, 24, 16], "latent_dim": 8, "projection_dim": 12}


def _config(**overrides) -> TrainingConfig:
    return TrainingConfig.from_dict(design_training("log2", **{**SMALL, **overrides}))


def _ensemble(config: TrainingConfig, seeds=(0, 1, 2)) -> BatchedSemanticEQ:
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return BatchedSemanticEQ.from_models(initial_models(config, generators))


@pytest.mark.parametrize("fused", [True, False])
def test_member_adam_steps_like_one_torch_adam_per_member(fused):
    config = _config(fused_adam=fused, lr_patience=0)
    ensemble = _ensemble(config)
    references = [torch.nn.Parameter(ensemble.flat[k].clone()) for k in range(3)]
    expected = [
        torch.optim.Adam([p], lr=config.learning_rate, **({"fused": True} if fused else {}))
        for p in references
    ]
    optimiser = MemberAdam(config, ensemble)
    flat_storage = ensemble.flat.data_ptr()
    generator = torch.Generator().manual_seed(0)
    # Validation losses at three epoch ends: member 1 stalls at the second, member 2 at
    # the third; with patience 0 each halves its learning rate there.
    epoch_ends = {10: [1.0, 1.0, 1.0], 20: [0.5, 1.0, 0.5], 30: [0.25, 0.4, 0.5]}
    with torch.inference_mode():  # as in train()
        for step in range(40):
            if step in epoch_ends:
                optimiser.end_epoch(epoch_ends[step])
                for k in range(3):
                    expected[k].param_groups[0]["lr"] = optimiser.learning_rates[k]
            grads = torch.randn(ensemble.flat.shape, generator=generator) * (1 + step % 5)
            ensemble.grad.copy_(grads)  # what loss_and_grad does: overwrite in place
            optimiser.step()
            for k, (p, reference) in enumerate(zip(references, expected, strict=True)):
                p.grad = grads[k].clone()
                reference.step()
    # Members 1 and 2 halved once each; member 0 (always better) never did.
    assert optimiser.learning_rates == [1e-3, 5e-4, 5e-4]
    # Members sharing a learning rate share one parameter group (one kernel call).
    assert sorted(len(g["params"]) for g in optimiser.adam.param_groups) == [1, 2]
    # The rows are views: the steps updated the ensemble's flat buffer itself.
    assert ensemble.flat.data_ptr() == flat_storage
    assert torch.equal(ensemble.flat, torch.stack([p.detach() for p in references]))


def test_fused_and_single_tensor_adam_agree_closely():
    fused, plain = _ensemble(_config()), _ensemble(_config())
    optimisers = {
        "fused": MemberAdam(_config(fused_adam=True), fused),
        "plain": MemberAdam(_config(fused_adam=False), plain),
    }
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for _ in range(50):
            grads = torch.randn(fused.flat.shape, generator=generator)
            for ensemble, name in ((fused, "fused"), (plain, "plain")):
                ensemble.grad.copy_(grads)
                optimisers[name].step()
    torch.testing.assert_close(fused.flat, plain.flat, rtol=1e-5, atol=1e-6)


def test_member_schedules_are_independent_and_follow_the_config():
    config = _config(lr_patience=1, lr_factor=0.25)
    optimiser = MemberAdam(config, _ensemble(config, seeds=(0, 1)))
    for losses in [(1.0, 1.0), (0.5, 1.0), (0.25, 1.0), (0.1, 1.0)]:
        optimiser.end_epoch(losses)
    assert optimiser.learning_rates == [config.learning_rate, config.learning_rate * 0.25]
    assert [g["lr"] for g in optimiser.adam.param_groups] == optimiser.learning_rates
    fixed = MemberAdam(_config(lr_schedule=False), _ensemble(config, seeds=(0, 1)))
    for losses in [(1.0, 1.0)] * 30:
        fixed.end_epoch(losses)
    assert fixed.learning_rates == [config.learning_rate] * 2


def _with_masks(model: SemanticEQModel, masks: torch.Tensor) -> None:
    """Make the model's dropout layers multiply by fixed (scaled) masks in training mode."""
    start = 0
    for block in [*model.encoder.blocks, *model.decoder.blocks]:
        width = block.linear1.out_features
        mask, layer = masks[:, start : start + width], block.dropout
        layer.forward = lambda t, m=mask, d=layer: t * m if d.training else t  # type: ignore[method-assign]
        start += width


def _eager_reference(config: TrainingConfig, seed: int, x, y, x_val, y_val):
    """One seed trained the plain way: nn.Module, autograd, torch.optim.Adam, plateau.

    Draws from the seed's generator in train()'s order: initial weights, then per epoch
    the permutation and per step the dropout masks.
    """
    generator = torch.Generator().manual_seed(seed)
    model = initial_models(config, [generator])[0]
    optimiser = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, betas=config.betas, eps=config.eps
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser,
        mode="min",
        factor=config.lr_factor,
        patience=config.lr_patience,
        threshold=config.lr_threshold,
    )
    width = sum(config.hidden_dims) * 2
    n, batch = len(x), config.batch_size
    learning_rates = []
    for weight in config.contrastive_weights():
        learning_rates.append(optimiser.param_groups[0]["lr"])
        model.train()
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            index = perm[start : start + batch]
            uniform = torch.rand((len(index), width), generator=generator)
            _with_masks(model, (uniform >= config.dropout) / (1 - config.dropout))
            _, projection, output = model(x[index])
            loss = reconstruction_loss(output, x[index], config.decoder_head)
            loss = loss + weight * supervised_contrastive_loss(
                projection, y[index], config.temperature
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            losses = []
            for start in range(0, len(x_val), batch):
                xb, yb = x_val[start : start + batch], y_val[start : start + batch]
                _, projection, output = model(xb)
                recon = reconstruction_loss(output, xb, config.decoder_head)
                contrastive = supervised_contrastive_loss(projection, yb, config.temperature)
                losses.append((recon, contrastive))
            recon = torch.stack([r for r, _ in losses]).mean()
            contrastive = torch.stack([c for _, c in losses]).mean()
        scheduler.step(float(recon + weight * contrastive))
    return model, learning_rates


@pytest.mark.parametrize("fused", [True, False])
def test_training_matches_an_eager_torch_optim_reference(fused):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 70)
    features = np.clip(rng.random((4, 13))[labels] + 0.05 * rng.standard_normal((70, 13)), 0, 1)
    # Patience 0 and a threshold no loss can beat: the LR halves after every epoch, so
    # the schedule drives the steps of every epoch after the first.
    config = _config(epochs=3, batch_size=16, lr_patience=0, lr_threshold=10.0, fused_adam=fused)
    result = train(config, features, labels, features[:30], labels[:30], seeds=[4, 9])
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels)
    for k, seed in enumerate((4, 9)):
        reference, learning_rates = _eager_reference(config, seed, x, y, x[:30], y[:30])
        history = result.history[result.history["seed"] == seed]
        assert history["learning_rate"].tolist() == learning_rates == [1e-3, 5e-4, 2.5e-4]
        got, expected = result.models[k].state_dict(), reference.state_dict()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=0, atol=2e-6, msg=name)
