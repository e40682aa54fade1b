import pytest
import torch

from neural_eq_morphing.models import BatchedAdam, PlateauScheduler
from neural_eq_morphing.models.optim import fused_adam_available


def _quadratic_problem(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randn(3, 40, generator=generator)
    start = torch.randn(3, 40, generator=generator)
    return target, start


@pytest.mark.parametrize(
    "fused",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(
                not fused_adam_available(), reason="no fused Adam kernel in this torch build"
            ),
        ),
    ],
)
def test_batched_adam_matches_torch_adam_bit_for_bit(fused):
    target, start = _quadratic_problem()
    lrs = [1e-3, 3e-3, 1e-2]
    references = [torch.nn.Parameter(start[k].clone()) for k in range(3)]
    optimisers = [
        torch.optim.Adam([references[k]], lr=lrs[k], betas=(0.9, 0.999), eps=1e-8, fused=fused)
        for k in range(3)
    ]
    flat = start.clone()
    adam = BatchedAdam(flat, lrs, betas=(0.9, 0.999), eps=1e-8, fused=fused)
    for step in range(60):
        if step == 30:  # a scheduler changing one member's LR mid-run
            adam.lrs[1] = 1.5e-3
            optimisers[1].param_groups[0]["lr"] = 1.5e-3
        grad = (flat - target) * (1.0 + step % 7)
        for k in range(3):
            references[k].grad = ((references[k].detach() - target[k]) * (1.0 + step % 7)).clone()
            optimisers[k].step()
        adam.step(grad)
        expected = torch.stack([p.detach() for p in references])
        assert torch.equal(flat, expected), f"step {step}"


def test_fused_and_tensor_adam_agree_closely():
    if not fused_adam_available():
        pytest.skip("no fused Adam kernel")
    target, start = _quadratic_problem(1)
    a, b = start.clone(), start.clone()
    fused, plain = BatchedAdam(a, 1e-2, fused=True), BatchedAdam(b, 1e-2, fused=False)
    for _ in range(100):
        fused.step(a - target)
        plain.step(b - target)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_batched_adam_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        BatchedAdam(torch.zeros(10))
    with pytest.raises(ValueError, match="learning rates"):
        BatchedAdam(torch.zeros(2, 3), lr=[1e-3])


def _torch_plateau_lrs(losses, **kwargs):
    param = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.SGD([param], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", **kwargs)
    used = []
    for loss in losses:
        used.append(optimiser.param_groups[0]["lr"])
        scheduler.step(loss)
    return used


def _loss_sequences():
    generator = torch.Generator().manual_seed(0)
    decreasing_then_flat = [
        1.0 / (1 + e) if e < 30 else 1.0 / 31 + 1e-6 * (e % 3) for e in range(150)
    ]
    noisy = (torch.linspace(1, 0.2, 150) + 0.05 * torch.randn(150, generator=generator)).tolist()
    # Improvements just below / above the relative threshold of 1e-4.
    threshold_edge = [
        1.0 * (1 - 0.99e-4) ** e if e % 2 else 1.0 * (1 - 1.01e-4) ** e for e in range(150)
    ]
    return [decreasing_then_flat, noisy, threshold_edge, [0.5] * 150]


@pytest.mark.parametrize("patience", [0, 3, 20])
def test_plateau_scheduler_matches_torch(patience):
    sequences = _loss_sequences()
    scheduler = PlateauScheduler(len(sequences), factor=0.5, patience=patience, threshold=1e-4)
    lrs = [1e-3] * len(sequences)
    used = [[] for _ in sequences]
    for epoch in range(150):
        for k in range(len(sequences)):
            used[k].append(lrs[k])
        lrs = scheduler.step([seq[epoch] for seq in sequences], lrs)
    for k, seq in enumerate(sequences):
        expected = _torch_plateau_lrs(seq, factor=0.5, patience=patience, threshold=1e-4)
        assert used[k] == expected, f"sequence {k}"


def test_plateau_scheduler_members_are_independent():
    scheduler = PlateauScheduler(2, patience=1)
    lrs = [1.0, 1.0]
    for loss_a, loss_b in [(1.0, 1.0), (0.5, 1.0), (0.25, 1.0), (0.1, 1.0)]:
        lrs = scheduler.step([loss_a, loss_b], lrs)
    assert lrs[0] == 1.0
    assert lrs[1] < 1.0
