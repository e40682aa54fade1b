import math

import pytest
import torch
import torch.nn.functional as F

from neural_eq_morphing.models import reconstruction_loss, supervised_contrastive_loss
from neural_eq_morphing.models.batched import batched_contrastive


def reference_supcon(projections: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Slow loop version of Khosla et al. (2020), L_out, anchors without positives skipped."""
    z = F.normalize(projections.double(), dim=-1)
    n = len(labels)
    losses = []
    for i in range(n):
        positives = [p for p in range(n) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / temperature) for a in range(n) if a != i)
        total = 0.0
        for p in positives:
            total += math.log(math.exp(float(z[i] @ z[p]) / temperature) / denominator)
        losses.append(-total / len(positives))
    return sum(losses) / len(losses) if losses else 0.0


def clustered(labels: torch.Tensor, dim: int = 8, spread: float = 0.05) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(dim)[: int(labels.max()) + 1] * 3
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=generator)


def test_clustered_embeddings_beat_shuffled_ones():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3])
    embeddings = clustered(labels)
    shuffled_labels = labels[
        torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    ]
    good = supervised_contrastive_loss(embeddings, labels)
    bad = supervised_contrastive_loss(embeddings, shuffled_labels)
    assert good < bad
    # Tighter clusters give a lower loss still.
    tighter = supervised_contrastive_loss(clustered(labels, spread=0.001), labels)
    assert tighter < good


def test_identical_positives_and_orthogonal_negatives_give_known_value():
    # Two classes, two rows each; same-class rows identical, classes orthogonal.
    projections = torch.tensor(
        [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64
    )
    labels = torch.tensor([0, 0, 1, 1])
    t = 0.1
    # For every anchor: one positive at similarity 1, two negatives at 0.
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2.0))
    assert supervised_contrastive_loss(projections, labels, t).item() == pytest.approx(
        expected, rel=1e-5
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    projections = torch.randn(12, 6, generator=generator)
    labels = torch.randint(0, 4, (12,), generator=generator)
    labels[0] = 99  # an anchor without positives: skipped
    got = supervised_contrastive_loss(projections, labels, 0.1).item()
    assert got == pytest.approx(reference_supcon(projections, labels, 0.1), rel=1e-5)


def test_no_positive_anywhere_gives_zero_and_zero_gradient():
    projections = torch.randn(5, 4, requires_grad=True)
    loss = supervised_contrastive_loss(projections, torch.arange(5))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(projections.grad, torch.zeros(5, 4))


def test_leading_dimensions_are_independent_batches():
    generator = torch.Generator().manual_seed(3)
    projections = torch.randn(3, 10, 5, generator=generator)
    labels = torch.randint(0, 3, (3, 10), generator=generator)
    stacked = supervised_contrastive_loss(projections, labels)
    single = torch.stack([supervised_contrastive_loss(projections[k], labels[k]) for k in range(3)])
    torch.testing.assert_close(stacked, single)


def test_batched_contrastive_value_and_gradient_match_autograd():
    generator = torch.Generator().manual_seed(4)
    projections = torch.randn(4, 16, 8, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 5, (4, 16), generator=generator)
    labels[1] = torch.arange(16)  # a batch without any positive pair
    leaf = projections.clone().requires_grad_()
    reference = supervised_contrastive_loss(leaf, labels, 0.1)
    (0.7 * reference).sum().backward()
    got = batched_contrastive(projections, labels, 0.1, weight=0.7)
    torch.testing.assert_close(got.loss, reference.detach())
    torch.testing.assert_close(got.d_projection, leaf.grad)


def test_reconstruction_loss_per_decoder_head():
    output = torch.tensor([[1.0, 2.0] + [0.0] * 11])
    target = torch.zeros(1, 13)
    assert reconstruction_loss(output, target, "normalised").item() == pytest.approx(5 / 13)
    # Plug-in units against z-scores, no conversion (Log 1's original mismatch).
    assert reconstruction_loss(output, target, "plugin_units").item() == pytest.approx(5 / 13)
    mean = torch.full((13,), 1.0)
    std = torch.full((13,), 2.0)
    consistent = reconstruction_loss(
        output, target, "plugin_units", consistent_units=True, zscore_mean=mean, zscore_std=std
    )
    expected = ((0.0) ** 2 + (0.5) ** 2 + 11 * 0.5**2) / 13
    assert consistent.item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="z-score"):
        reconstruction_loss(output, target, "plugin_units", consistent_units=True)
    with pytest.raises(ValueError, match="plugin_units decoder head only"):
        reconstruction_loss(
            output, target, "normalised", consistent_units=True, zscore_mean=mean, zscore_std=std
        )
    with pytest.raises(ValueError, match="decoder_head"):
        reconstruction_loss(output, target, "log2")  # type: ignore[arg-type]
