"""The losses: contrastive, reconstruction, KL, row masks, and a design's objective."""

import math

import pytest
import torch
import torch.nn.functional as F

from neural_eq_morphing.models import (
    Objective,
    SemanticEQModel,
    reconstruction_per_row,
    supervised_contrastive_loss,
)
from neural_eq_morphing.models.losses import kl_per_row, masked_mean
from neural_eq_morphing.models.perceptual import perceptual_loss_per_row


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


def test_labels_may_be_shared_by_the_leading_dimensions():
    generator = torch.Generator().manual_seed(5)
    projections = torch.randn(3, 10, 5, generator=generator)
    labels = torch.randint(0, 3, (10,), generator=generator)
    shared = supervised_contrastive_loss(projections, labels)
    expanded = supervised_contrastive_loss(projections, labels.expand(3, 10))
    assert torch.equal(shared, expanded)
    with pytest.raises(ValueError, match="batch, dim"):
        supervised_contrastive_loss(torch.randn(5), labels[:5])


def test_gradient_is_finite_and_passes_gradcheck_with_a_row_mask():
    generator = torch.Generator().manual_seed(4)
    projections = torch.randn(2, 7, 4, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 7), generator=generator)
    valid = torch.arange(7) < torch.tensor([[5], [7]])
    leaf = projections.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p: supervised_contrastive_loss(p, labels, 0.5, valid), (leaf,)
    )


def test_row_mask_gives_the_loss_and_gradient_of_the_unpadded_batch():
    """A padded row is no anchor, no positive and no negative: the loss and gradient are
    those of the batch without it, and the padded rows get exactly no gradient."""
    generator = torch.Generator().manual_seed(2)
    projection = torch.randn(3, 7, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 2, (3, 7), generator=generator)
    sizes = [4, 7, 0]
    valid = torch.arange(7) < torch.tensor(sizes).unsqueeze(1)
    leaf = projection.clone().requires_grad_()
    got = supervised_contrastive_loss(leaf, labels, 0.1, valid)
    (got * torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)).sum().backward()
    assert not leaf.grad[~valid].any()
    assert got[2] == 0  # no valid rows at all
    for k, weight in ((0, 0.5), (1, 2.0)):
        b = sizes[k]
        alone = projection[k, :b].clone().requires_grad_()
        expected = supervised_contrastive_loss(alone, labels[k, :b], 0.1)
        (weight * expected).backward()
        torch.testing.assert_close(got[k], expected)
        torch.testing.assert_close(leaf.grad[k, :b], alone.grad)
        assert got[k].item() == pytest.approx(
            reference_supcon(projection[k, :b], labels[k, :b], 0.1)
        )
    # Other (finite) values and labels in the padded rows change nothing.
    other, other_labels = projection.clone(), labels.clone()
    other[~valid] = torch.randn(int((~valid).sum()), 5, generator=generator, dtype=torch.float64)
    other_labels[~valid] = labels[0, 0]  # would be positives of row 0 if they counted
    assert torch.equal(supervised_contrastive_loss(other, other_labels, 0.1, valid), got.detach())


def test_reconstruction_per_row():
    output = torch.tensor([[1.0, 2.0] + [0.0] * 11, [0.0] * 13])
    target = torch.zeros(2, 13)
    # Normalised space, or (Log 1's original mismatch) plug-in units against z-scores.
    got = reconstruction_per_row(output, target)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx([5 / 13, 0.0])
    # Consistent units: the output z-scored first.
    mean = torch.full((13,), 1.0)
    std = torch.full((13,), 2.0)
    consistent = reconstruction_per_row(output, target, (mean, std))
    expected = ((0.0) ** 2 + (0.5) ** 2 + 11 * 0.5**2) / 13
    assert consistent.tolist() == pytest.approx([expected, 0.25])
    # One z-score per member (M, 1, 13), broadcast over that member's rows.
    per_member = reconstruction_per_row(
        output.expand(2, 2, 13),
        target.expand(2, 2, 13),
        (mean * torch.ones(2, 1, 13), torch.stack([std, torch.ones(13)]).unsqueeze(1)),
    )
    assert per_member[0].tolist() == pytest.approx([expected, 0.25])
    assert per_member[1].tolist() == pytest.approx([12 / 13, 1.0])


def test_kl_per_row_and_masked_mean():
    mean = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    log_variance = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])
    expected = [0.0, 0.5 * (1 + 2 - math.log(2.0) - 1 + 4)]
    assert kl_per_row(mean, log_variance).tolist() == pytest.approx(expected)
    values = torch.tensor([[1.0, 2.0, 30.0], [4.0, 5.0, 6.0]])
    assert masked_mean(values, None).tolist() == pytest.approx([11.0, 5.0])
    valid = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(values, valid).tolist() == [1.5, 0.0]  # no valid rows: 0


def test_objective_adds_the_perceptual_loss_of_its_members_only():
    generator = torch.Generator().manual_seed(0)
    output = torch.rand(3, 6, 13, generator=generator)
    target = torch.rand(3, 6, 13, generator=generator)
    objective = Objective.of(0.1, 3, perceptual_weight=[0.0, 0.5, 2.0])
    got = objective.reconstruction_rows(output, target)
    mse = reconstruction_per_row(output, target)
    perceptual = perceptual_loss_per_row(output, target)
    assert perceptual.min() > 0
    assert torch.equal(got[0], mse[0])
    torch.testing.assert_close(got[1:], mse[1:] + torch.tensor([[0.5], [2.0]]) * perceptual[1:])
    assert torch.equal(Objective.of(0.1, 3).reconstruction_rows(output, target), mse)
    assert Objective.of(0.2, 4, perceptual_weight=1.5).perceptual_weight.tolist() == [1.5] * 4
    with pytest.raises(ValueError, match="perceptual_weight must be one number or 3"):
        Objective.of(0.1, 3, perceptual_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="each at least 0"):
        Objective.of(0.1, 2, perceptual_weight=[1.0, -2.0])


# ---------------------------------------------- padded rows contribute nothing
DIMS = {"hidden_dims": (16, 24, 16), "latent_dim": 3, "projection_dim": 12, "dropout": 0.1}


def _step(model, objective, x, labels, masks, noise, valid=None):
    """A training step's losses and autograd gradient of ``recon + 0.3·con + 0.1·KL``."""
    model.flat.grad = None
    fwd = model.run(x, masks=masks, noise=noise, training=True)
    losses = objective.losses(fwd, x, labels, valid)
    (losses.reconstruction + 0.3 * losses.contrastive + 0.1 * losses.kl).sum().backward()
    return losses, model.flat.grad.clone()


@pytest.mark.parametrize(
    ("decoder_head", "perceptual", "variational", "consistent"),
    [
        ("normalised", 0.0, False, False),
        ("separate", 0.0, False, False),
        ("normalised", 0.7, False, False),
        ("normalised", 0.0, True, False),
        ("separate", 0.5, True, False),
        ("plugin_units", 0.0, False, True),
    ],
)
def test_padded_rows_contribute_nothing(decoder_head, perceptual, variational, consistent):
    """With a row mask, each member's losses and gradient are those of its rows alone;
    the padded rows' values do not matter; a member without rows gets zeros."""
    generators = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    config = SemanticEQModel(decoder_head, seed=0, variational=variational, **DIMS).model_config
    model = SemanticEQModel.initialised(config, generators)
    generator = torch.Generator().manual_seed(4)
    sizes, batch = [5, 9, 0], 9
    width = sum(model.layout.dropout_widths)
    x = torch.rand(3, batch, 13, generator=generator) * 1.4 - 0.2
    labels = torch.randint(0, 3, (3, batch), generator=generator)
    masks = (torch.rand(3, batch, width, generator=generator) >= 0.1) / 0.9
    noise = torch.randn(3, batch, 3, generator=generator) if variational else None
    zscore = None
    if consistent:
        zscore = (
            torch.rand(3, 1, 13, generator=generator),
            torch.rand(3, 1, 13, generator=generator) + 0.5,
        )
    objective = Objective.of(0.1, 3, zscore, perceptual)
    valid = torch.arange(batch) < torch.tensor(sizes).unsqueeze(1)
    losses, grad = _step(model, objective, x, labels, masks, noise, valid)
    assert grad[:2].abs().max() > 0
    # Other (finite) values in the padded rows: bit-identical losses and gradients.
    x2, labels2, masks2 = x.clone(), labels.clone(), masks.clone()
    x2[~valid] = torch.rand(int((~valid).sum()), 13, generator=generator)
    labels2[~valid] = labels[0, 0]
    masks2[~valid] = 1.0 / 0.9
    noise2 = None if noise is None else noise.clone()
    if noise2 is not None:
        noise2[~valid] = 3.0
    again, grad2 = _step(model, objective, x2, labels2, masks2, noise2, valid)
    assert torch.equal(grad2, grad)
    for name, a, b in zip(losses._fields, again, losses, strict=True):
        assert torch.equal(a, b), name
    # A member without rows: zero losses and gradient.
    assert losses.reconstruction[2] == 0
    assert losses.contrastive[2] == 0
    assert losses.kl[2] == 0
    assert not grad[2].any()
    if variational:
        assert (losses.kl[:2] > 0).all()
    # Each member as if alone on its own rows (one member, unpadded).
    for k in (0, 1):
        b, one = sizes[k], slice(k, k + 1)
        solo = model.member(k)
        own = None if zscore is None else (zscore[0][one], zscore[1][one])
        expected, solo_grad = _step(
            solo,
            Objective.of(0.1, 1, own, perceptual),
            x[one, :b],
            labels[one, :b],
            masks[one, :b],
            None if noise is None else noise[one, :b],
        )
        scale = solo_grad.abs().max()
        torch.testing.assert_close(grad[k] / scale, solo_grad[0] / scale, rtol=0, atol=1e-6)
        for name, a, e in zip(losses._fields, losses, expected, strict=True):
            torch.testing.assert_close(a[k], e[0], rtol=1e-6, atol=1e-7, msg=name)
