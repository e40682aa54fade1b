"""The optimiser path of training: ``torch.optim.Adam`` and ``ReduceLROnPlateau`` per member."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neural_eq_morphing.models import (
    SemanticEQModel,
    TrainingConfig,
    supervised_contrastive_loss,
    train,
)
from neural_eq_morphing.models.optim import MemberAdam
from tests.models.conftest import design_training, plain_model, with_masks

SMALL = {"hidden_dims": [16, 24, 16], "latent_dim": 8, "projection_dim": 12}


def _config(**overrides) -> TrainingConfig:
    return TrainingConfig.from_dict(design_training("log2", **{**SMALL, **overrides}))


def _buffers(config: TrainingConfig, seeds=(0, 1, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """An ensemble's flat parameters ``(M, P)`` without autograd, and a gradient buffer."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    flat = SemanticEQModel.initialised(config.network_config(), generators).flat.detach()
    return flat, torch.zeros_like(flat)


@pytest.mark.parametrize("fused", [True, False])
def test_member_adam_steps_like_one_torch_adam_per_member(fused):
    config = _config(fused_adam=fused, lr_patience=0)
    flat, grad = _buffers(config)
    references = [torch.nn.Parameter(flat[k].clone()) for k in range(3)]
    expected = [
        torch.optim.Adam([p], lr=config.learning_rate, **({"fused": True} if fused else {}))
        for p in references
    ]
    optimiser = MemberAdam(config, flat, grad)
    flat_storage = flat.data_ptr()
    generator = torch.Generator().manual_seed(0)
    # Validation losses at three epoch ends: member 1 stalls at the second, member 2 at
    # the third; with patience 0 each halves its learning rate there.
    epoch_ends = {10: [1.0, 1.0, 1.0], 20: [0.5, 1.0, 0.5], 30: [0.25, 0.4, 0.5]}
    with torch.no_grad():  # as in train()
        for step in range(40):
            if step in epoch_ends:
                optimiser.end_epoch(epoch_ends[step])
                for k in range(3):
                    expected[k].param_groups[0]["lr"] = optimiser.learning_rates[k]
            grads = torch.randn(flat.shape, generator=generator) * (1 + step % 5)
            grad.copy_(grads)  # what the training step does: overwrite in place
            optimiser.step()
            for k, (p, reference) in enumerate(zip(references, expected, strict=True)):
                p.grad = grads[k].clone()
                reference.step()
    # Members 1 and 2 halved once each; member 0 (always better) never did.
    assert optimiser.learning_rates == [1e-3, 5e-4, 5e-4]
    # Members sharing a learning rate share one parameter group (one kernel call).
    assert sorted(len(g["params"]) for g in optimiser.adam.param_groups) == [1, 2]
    # The rows are views: the steps updated the ensemble's flat buffer itself.
    assert flat.data_ptr() == flat_storage
    assert torch.equal(flat, torch.stack([p.detach() for p in references]))
    assert all(row.grad.data_ptr() == grad[k].data_ptr() for k, row in enumerate(optimiser.rows))


def test_fused_and_single_tensor_adam_agree_closely():
    (fused, fused_grad), (plain, plain_grad) = _buffers(_config()), _buffers(_config())
    optimisers = {
        "fused": MemberAdam(_config(fused_adam=True), fused, fused_grad),
        "plain": MemberAdam(_config(fused_adam=False), plain, plain_grad),
    }
    generator = torch.Generator().manual_seed(1)
    before = fused.clone()
    with torch.no_grad():
        for _ in range(50):
            grads = torch.randn(fused.shape, generator=generator)
            for grad, name in ((fused_grad, "fused"), (plain_grad, "plain")):
                grad.copy_(grads)
                optimisers[name].step()
    assert (fused - before).abs().max() > 1e-3
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


def test_member_adam_leaves_inactive_members_alone():
    flat, grad = _buffers(_config())
    optimiser = MemberAdam(_config(), flat, grad)
    grad.normal_(generator=torch.Generator().manual_seed(0))
    before = flat.clone()
    grads = [optimiser.rows[k].grad for k in range(3)]
    with torch.no_grad():
        optimiser.step([True, False, True])
    assert torch.equal(flat[1], before[1])
    assert not torch.equal(flat[0], before[0])
    assert not torch.equal(flat[2], before[2])
    assert optimiser.rows[1] not in optimiser.adam.state
    assert all(row.grad is g for row, g in zip(optimiser.rows, grads, strict=True))
    with torch.no_grad():
        optimiser.step()
    assert int(optimiser.adam.state[optimiser.rows[0]]["step"]) == 2
    assert int(optimiser.adam.state[optimiser.rows[1]]["step"]) == 1
    with pytest.raises(ValueError, match="need 3 flags"):
        optimiser.step([True, False])


def test_member_adam_needs_plain_buffers_of_one_shape():
    flat, grad = _buffers(_config())
    with pytest.raises(ValueError, match="without autograd"):
        MemberAdam(_config(), flat.clone().requires_grad_(), grad)
    with pytest.raises(ValueError, match="without autograd"):
        MemberAdam(_config(), flat, grad[:2])


def test_members_with_their_own_learning_rate_step_as_alone():
    config = _config()
    configs = [config, _config(learning_rate=5e-4), _config(learning_rate=2e-3)]
    flat, grad = _buffers(config)
    optimiser = MemberAdam(config, flat, grad, configs)
    assert optimiser.learning_rates == [1e-3, 5e-4, 2e-3]
    assert sorted(g["lr"] for g in optimiser.adam.param_groups) == [5e-4, 1e-3, 2e-3]
    references = [torch.nn.Parameter(flat[k].clone()) for k in range(3)]
    expected = [
        torch.optim.Adam([p], lr=c.learning_rate, fused=True)
        for p, c in zip(references, configs, strict=True)
    ]
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _ in range(5):
            grads = torch.randn(flat.shape, generator=generator)
            grad.copy_(grads)
            optimiser.step()
            for k, (p, reference) in enumerate(zip(references, expected, strict=True)):
                p.grad = grads[k].clone()
                reference.step()
    assert torch.equal(flat, torch.stack([p.detach() for p in references]))


def test_member_schedules_are_independent_and_follow_the_config():
    config = _config(lr_patience=1, lr_factor=0.25)
    optimiser = MemberAdam(config, *_buffers(config, seeds=(0, 1)))
    for losses in [(1.0, 1.0), (0.5, 1.0), (0.25, 1.0), (0.1, 1.0)]:
        optimiser.end_epoch(losses)
    assert optimiser.learning_rates == [config.learning_rate, config.learning_rate * 0.25]
    assert [g["lr"] for g in optimiser.adam.param_groups] == optimiser.learning_rates
    fixed = MemberAdam(_config(lr_schedule=False), *_buffers(config, seeds=(0, 1)))
    for losses in [(1.0, 1.0)] * 30:
        fixed.end_epoch(losses)
    assert fixed.learning_rates == [config.learning_rate] * 2


def _eager_reference(config: TrainingConfig, seed: int, x, y, x_val, y_val):
    """One seed trained the plain way: nn.Module, autograd, torch.optim.Adam, plateau.

    Draws from the seed's stream in train()'s order: initial weights (torch's default
    init of the plain modules), then per epoch the permutation and per step the dropout
    masks.
    """
    model, generator = plain_model(
        config.decoder_head,
        seed,
        hidden_dims=config.hidden_dims,
        latent_dim=config.latent_dim,
        projection_dim=config.projection_dim,
        dropout=config.dropout,
    )
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
    learning_rates, val_losses = [], []
    for weight in config.contrastive_weights():
        learning_rates.append(optimiser.param_groups[0]["lr"])
        model.train()
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            index = perm[start : start + batch]
            uniform = torch.rand((len(index), width), generator=generator)
            with_masks(model, (uniform >= config.dropout) / (1 - config.dropout))
            _, projection, output = model(x[index])
            loss = F.mse_loss(output, x[index])
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
                recon = F.mse_loss(output, xb)
                contrastive = supervised_contrastive_loss(projection, yb, config.temperature)
                losses.append((recon, contrastive))
            recon = torch.stack([r for r, _ in losses]).mean()
            contrastive = torch.stack([c for _, c in losses]).mean()
        val_losses.append(float(recon + weight * contrastive))
        scheduler.step(val_losses[-1])
    return model, learning_rates, val_losses


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
        reference, learning_rates, val_losses = _eager_reference(config, seed, x, y, x[:30], y[:30])
        history = result.history[result.history["seed"] == seed]
        assert history["learning_rate"].tolist() == learning_rates == [1e-3, 5e-4, 2.5e-4]
        np.testing.assert_allclose(history["val_loss"], val_losses, rtol=1e-5, atol=0)
        model = result.models[k]
        expected = model.layout.flat_from_state_dict(reference.state_dict())
        initial = model.layout.initial_row(torch.Generator().manual_seed(seed))
        assert (expected - initial).abs().max() > 1e-3  # the weights did move
        torch.testing.assert_close(model.flat[0].detach(), expected, rtol=0, atol=2e-6)
