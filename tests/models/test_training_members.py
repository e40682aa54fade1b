"""``train_members``: members with rows of their own train as they would alone."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from neural_eq_morphing.eq.parameters import LOWER_LIMITS, UPPER_LIMITS
from neural_eq_morphing.models import (
    HISTORY_COLUMNS,
    MEMBER_HISTORY_COLUMNS,
    BatchedSemanticEQ,
    EpochReport,
    MemberData,
    SemanticEQModel,
    TrainingConfig,
    TrainingResult,
    train,
    train_members,
)
from neural_eq_morphing.models.batched import batched_contrastive
from neural_eq_morphing.models.training import MemberAdam, initial_models
from tests.models.conftest import design_training, design_with_head

SMALL = {
    "epochs": 3,
    "batch_size": 32,
    "hidden_dims": [16, 24, 16],
    "latent_dim": 8,
    "projection_dim": 12,
}
CENTRES = np.random.default_rng(99).random((4, 13))
#: (training rows, validation rows, seed): with batch_size 32 the members have 5, 4 and 8
#: steps per epoch, and last batches of 22, 1 and 6 rows; members 0 and 1 share a seed.
LAYOUT = [(150, 40, 3), (97, 70, 3), (230, 33, 5)]
#: Every history column but the keys.
COMPARED = tuple(c for c in HISTORY_COLUMNS if c not in ("seed", "epoch"))


def rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised features in [0, 1] clustered by term (4 terms), and the term ids."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CENTRES), n)
    features = np.clip(CENTRES[labels] + 0.05 * rng.standard_normal((n, 13)), 0, 1)
    return features, labels


def make_members(layout=LAYOUT, zscores=None) -> list[MemberData]:
    members = []
    for k, (n, n_val, seed) in enumerate(layout):
        x, y = rows(n, 10 + k)
        x_val, y_val = rows(n_val, 20 + k)
        mean, std = zscores[k] if zscores else (None, None)
        members.append(MemberData(seed, x, y, x_val, y_val, zscore_mean=mean, zscore_std=std))
    return members


def config(design: str = "log2", **overrides) -> TrainingConfig:
    return TrainingConfig.from_dict(design_training(design, **{**SMALL, **overrides}))


def alone(cfg: TrainingConfig, member: MemberData) -> TrainingResult:
    """What ``member`` gets trained on its own."""
    return train(
        cfg,
        member.train_features,
        member.train_labels,
        member.val_features,
        member.val_labels,
        seeds=[member.seed],
        zscore_mean=member.zscore_mean,
        zscore_std=member.zscore_std,
    )


def largest_weight_difference(a: SemanticEQModel, b: SemanticEQModel) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[name] - sb[name]).abs().max().item() for name in sa)


def assert_trained_as_alone(
    cfg: TrainingConfig, result: TrainingResult, members, atol: float, rtol: float = 0.0
):
    for k, member in enumerate(members):
        solo = alone(member.config or cfg, member)
        got = result.history[result.history["member"] == k].reset_index(drop=True)
        assert got["seed"].tolist() == [member.seed] * cfg.epochs
        for column in COMPARED:
            np.testing.assert_allclose(
                got[column], solo.history[column], rtol=rtol, atol=atol, err_msg=column
            )
        assert largest_weight_difference(result.models[k], solo.models[0]) < atol, k


@pytest.mark.parametrize("workers", [1, 2])
def test_each_member_trains_as_it_would_alone(workers):
    cfg = config(dropout=0.1, lr_schedule=True, lr_patience=0, workers=workers)
    members = make_members()
    result = train_members(cfg, members)
    assert_trained_as_alone(cfg, result, members, atol=1e-5)
    # Members 0 and 1 share a seed (same initial weights) but not their rows.
    assert largest_weight_difference(result.models[0], result.models[1]) > 1e-3
    assert result.seeds == [3, 3, 5]
    assert result.config.seeds == (3, 5)
    # The schedule acted (patience 0): the learning rates moved at some point.
    assert result.history["learning_rate"].min() < cfg.learning_rate


@pytest.mark.parametrize("design", ["log2_separate_heads", "log2_perceptual", "vae2"])
def test_the_designs_beyond_log2_train_each_member_as_alone(design):
    """The autograd output stage and the β-VAE's noise draws keep the guarantee: a member
    of an ensemble trains as it would alone (its own noise from its own generator)."""
    cfg = config(design, dropout=0.1, workers=2)
    members = make_members()
    result = train_members(cfg, members)
    assert_trained_as_alone(cfg, result, members, atol=1e-5)
    history = result.history
    if cfg.variational:  # β annealed from 0; the KL term measured every epoch
        assert history["kl_weight"].iloc[0] == 0
        assert history["kl_weight"].max() > 0
        assert (history["train_kl"] > 0).all()
        assert (history["val_kl"] > 0).all()
        last = history.iloc[-1]
        expected = (
            last["val_reconstruction"]
            + last["contrastive_weight"] * last["val_contrastive"]
            + last["kl_weight"] * last["val_kl"]
        )
        assert last["val_loss"] == pytest.approx(expected)
    else:
        assert (history[["train_kl", "val_kl", "kl_weight"]] == 0).all().all()


def test_members_with_their_own_head_and_perceptual_weight_train_as_alone():
    """Log 2, its separate heads and its perceptual loss share one ensemble (compare's
    Log 2 family), each member trained as it would be alone."""
    base = config(dropout=0.1)
    own = [
        replace(base, decoder_head="separate"),
        replace(base, perceptual_weight=1.0),
        base,
    ]
    members = [replace(m, config=c) for m, c in zip(make_members(), own, strict=True)]
    result = train_members(base, members)
    assert_trained_as_alone(base, result, members, atol=1e-5)
    assert [m.model_config["decoder_head"] for m in result.models] == [
        "separate",
        "normalised",
        "normalised",
    ]
    with pytest.raises(ValueError, match="only the normalised and separate heads may mix"):
        train_members(
            base, [replace(members[0], config=replace(base, decoder_head="plugin_units"))]
        )


def test_each_member_with_its_own_normaliser_trains_as_alone():
    design = design_with_head("plugin_units")
    cfg = config(design, recon_in_consistent_units=True, dropout=0.1, workers=2)
    middle, spread = (LOWER_LIMITS + UPPER_LIMITS) / 2, (UPPER_LIMITS - LOWER_LIMITS) / 4
    zscores = [(middle * (1 + 0.1 * k), spread * (1 + 0.2 * k)) for k in range(len(LAYOUT))]
    members = make_members(zscores=zscores)
    result = train_members(cfg, members)
    # Decoder outputs in plug-in units (Hz): allow for their larger round-off.
    assert_trained_as_alone(cfg, result, members, atol=1e-4)
    # The normaliser matters: member 2 with member 0's gets another history.
    swapped = MemberData(
        members[2].seed,
        members[2].train_features,
        members[2].train_labels,
        members[2].val_features,
        members[2].val_labels,
        *zscores[0],
    )
    other = alone(cfg, swapped)
    mine = result.history[result.history["member"] == 2]
    assert abs(other.history["val_loss"].iloc[-1] - mine["val_loss"].iloc[-1]) > 1e-3


def test_members_on_shared_rows_match_train():
    cfg = config(dropout=0.1, lr_schedule=False)
    x, y = rows(150, 0)
    x_val, y_val = rows(50, 1)
    seeds = [4, 9]
    shared = train(cfg, x, y, x_val, y_val, seeds=seeds)
    result = train_members(cfg, [MemberData(s, x, y, x_val, y_val) for s in seeds])
    assert list(shared.history.columns) == list(HISTORY_COLUMNS)
    assert list(result.history.columns) == list(MEMBER_HISTORY_COLUMNS)
    pd.testing.assert_frame_equal(
        result.history[list(HISTORY_COLUMNS)], shared.history, check_exact=False, atol=1e-6
    )
    for a, b in zip(result.models, shared.models, strict=True):
        assert largest_weight_difference(a, b) < 1e-6


def test_history_progress_and_timing_with_repeated_seeds():
    cfg = config(epochs=2, workers=2)
    layout = [(40, 20, 1), (70, 35, 1), (33, 33, 2), (64, 10, 1)]
    members = make_members(layout)
    reports: list[EpochReport] = []
    result = train_members(cfg, members, progress=reports.append)
    history = result.history
    assert list(history.columns) == list(MEMBER_HISTORY_COLUMNS)
    assert history["member"].dtype == np.int64
    assert history["member"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert history["epoch"].tolist() == [1, 2] * 4
    assert history["seed"].tolist() == [1, 1, 1, 1, 2, 2, 1, 1]
    assert [r.epoch for r in reports] == [1, 2]
    for report in reports:
        assert report.seeds == (1, 1, 2, 1)
        epoch = history[history["epoch"] == report.epoch]
        assert tuple(epoch["val_loss"]) == report.val_loss
    assert result.timing.members == 4
    assert len(result.timing.epoch_s) == 2
    assert len(result.models) == 4


def test_input_errors_name_the_member():
    cfg = config(epochs=1)
    good = make_members()
    x, y = rows(30, 0)
    with pytest.raises(ValueError, match="at least one member"):
        train_members(cfg, [])
    with pytest.raises(ValueError, match=r"members\[1\]\.train_features must have shape"):
        train_members(cfg, [good[0], MemberData(0, x[:, :12], y, x, y)])
    with pytest.raises(ValueError, match=r"members\[0\]\.val_labels must have shape \(30,\)"):
        train_members(cfg, [MemberData(0, x, y, x, y[:20])])
    with pytest.raises(ValueError, match=r"members\[2\]\.train_features is empty"):
        train_members(cfg, [*good[:2], MemberData(0, x[:0], y[:0], x, y)])
    with pytest.raises(ValueError, match=r"members\[0\]\.val_features is empty"):
        train_members(cfg, [MemberData(0, x, y, x[:0], y[:0])])
    with pytest.raises(ValueError, match=r"members\[0\]\.train_labels must hold integer"):
        train_members(cfg, [MemberData(0, x, y.astype(float), x, y)])
    with pytest.raises(TypeError, match=r"members\[1\] must be a MemberData"):
        train_members(cfg, [good[0], (0, x, y, x, y)])  # type: ignore[list-item]
    consistent = config(design_with_head("plugin_units"), epochs=1, recon_in_consistent_units=True)
    mean, std = (LOWER_LIMITS + UPPER_LIMITS) / 2, (UPPER_LIMITS - LOWER_LIMITS) / 4
    with pytest.raises(ValueError, match=r"members\[1\]: recon_in_consistent_units needs"):
        train_members(consistent, [MemberData(0, x, y, x, y, mean, std), MemberData(0, x, y, x, y)])
    with pytest.raises(ValueError, match=r"members\[0\]: zscore_std must hold 13 values"):
        train_members(consistent, [MemberData(0, x, y, x, y, mean, std[:5])])
    with pytest.raises(ValueError, match=r"members\[0\]: zscore_std must be positive"):
        train_members(consistent, [MemberData(0, x, y, x, y, mean, -std)])


# --------------------------------------------------------------- the batched pieces
def _ensemble(members: int = 3, **kwargs) -> BatchedSemanticEQ:
    cfg = config(dropout=0.1)
    generators = [torch.Generator().manual_seed(s) for s in range(members)]
    return BatchedSemanticEQ.from_models(initial_models(cfg, generators), **kwargs)


def test_padded_rows_contribute_exactly_nothing():
    generator = torch.Generator().manual_seed(0)
    ensemble = _ensemble()
    sizes, batch = [5, 9, 0], 9
    valid = torch.arange(batch) < torch.tensor(sizes).unsqueeze(1)
    x = torch.rand(3, batch, 13, generator=generator)
    labels = torch.randint(0, 3, (3, batch), generator=generator)
    masks = (torch.rand(3, batch, ensemble.dropout_width, generator=generator) >= 0.1) / 0.9
    losses = ensemble.loss_and_grad(x, labels, masks, 0.3, valid)
    grad = ensemble.grad.clone()
    # Other (finite) values in the padded rows: bit-identical losses and gradients.
    x2, labels2, masks2 = x.clone(), labels.clone(), masks.clone()
    x2[~valid] = torch.rand(int((~valid).sum()), 13, generator=generator)
    labels2[~valid] = 1
    masks2[~valid] = 1.0 / 0.9
    again = ensemble.loss_and_grad(x2, labels2, masks2, 0.3, valid)
    assert torch.equal(ensemble.grad, grad)
    assert torch.equal(again.reconstruction, losses.reconstruction)
    assert torch.equal(again.contrastive, losses.contrastive)
    # A member without rows: zero losses and gradient.
    assert losses.reconstruction[2] == 0
    assert losses.contrastive[2] == 0
    assert not grad[2].any()
    # Each member as if alone on its own rows (a batch of one member, unpadded).
    for k in (0, 1):
        solo = BatchedSemanticEQ(ensemble.model_config, ensemble.flat[k : k + 1].clone())
        b = sizes[k]
        expected = solo.loss_and_grad(
            x[k : k + 1, :b], labels[k : k + 1, :b], masks[k : k + 1, :b], 0.3
        )
        torch.testing.assert_close(grad[k], solo.grad[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(losses.reconstruction[k], expected.reconstruction[0])
        torch.testing.assert_close(losses.contrastive[k], expected.contrastive[0])


def test_masked_contrastive_equals_the_unpadded_batches():
    generator = torch.Generator().manual_seed(2)
    projection = torch.randn(2, 7, 5, generator=generator)
    labels = torch.randint(0, 2, (2, 7), generator=generator)
    valid = torch.arange(7) < torch.tensor([[4], [7]])
    got = batched_contrastive(projection, labels, 0.1, 0.5, valid)
    assert got.d_projection is not None
    assert not got.d_projection[0, 4:].any()
    first = batched_contrastive(projection[:1, :4], labels[:1, :4], 0.1, 0.5)
    torch.testing.assert_close(got.loss[0], first.loss[0])
    torch.testing.assert_close(got.d_projection[0, :4], first.d_projection[0])
    second = batched_contrastive(projection[1:], labels[1:], 0.1, 0.5)
    torch.testing.assert_close(got.loss[1], second.loss[0])


def test_evaluate_members_equals_evaluate_on_each_members_rows():
    generator = torch.Generator().manual_seed(3)
    mean = torch.rand(3, 13, generator=generator)
    std = torch.rand(3, 13, generator=generator) + 0.5
    cfg = config(design_with_head("plugin_units"))
    generators = [torch.Generator().manual_seed(s) for s in range(3)]
    models = initial_models(cfg, generators)
    ensemble = BatchedSemanticEQ.from_models(
        models, zscore_mean=mean, zscore_std=std, recon_in_consistent_units=True
    )
    counts = [37, 16, 5]
    x = torch.rand(3, 37, 13, generator=generator)
    labels = torch.randint(0, 3, (3, 37), generator=generator)
    got = ensemble.evaluate_members(x, labels, counts, batch_size=16)
    for k, n in enumerate(counts):
        solo = BatchedSemanticEQ.from_models(
            [models[k]], zscore_mean=mean[k], zscore_std=std[k], recon_in_consistent_units=True
        )
        expected = solo.evaluate(x[k, :n], labels[k, :n], batch_size=16)
        torch.testing.assert_close(got.reconstruction[k], expected.reconstruction[0])
        torch.testing.assert_close(got.contrastive[k], expected.contrastive[0])
    with pytest.raises(ValueError, match="counts"):
        ensemble.evaluate_members(x, labels, [37, 0, 5], batch_size=16)
    with pytest.raises(ValueError, match="zscore_mean"):
        BatchedSemanticEQ.from_models(
            models, zscore_mean=mean[:2], zscore_std=std, recon_in_consistent_units=True
        )


def test_member_adam_leaves_inactive_members_alone():
    cfg = config()
    ensemble = _ensemble()
    optimiser = MemberAdam(cfg, ensemble)
    ensemble.grad.normal_(generator=torch.Generator().manual_seed(0))
    before = ensemble.flat.clone()
    grads = list(optimiser.rows[k].grad for k in range(3))
    with torch.inference_mode():
        optimiser.step([True, False, True])
    assert torch.equal(ensemble.flat[1], before[1])
    assert not torch.equal(ensemble.flat[0], before[0])
    assert optimiser.rows[1] not in optimiser.adam.state
    assert all(row.grad is grad for row, grad in zip(optimiser.rows, grads, strict=True))
    with torch.inference_mode():
        optimiser.step()
    assert int(optimiser.adam.state[optimiser.rows[0]]["step"]) == 2
    assert int(optimiser.adam.state[optimiser.rows[1]]["step"]) == 1


def _with_config(member: MemberData, cfg: TrainingConfig | None, **zscore) -> MemberData:
    return MemberData(
        member.seed,
        member.train_features,
        member.train_labels,
        member.val_features,
        member.val_labels,
        config=cfg,
        **zscore,
    )


def test_members_with_their_own_schedule_weights_and_rate_train_as_alone():
    cfg = config(dropout=0.1, lr_schedule=True, lr_patience=0)
    own = [
        None,
        replace(cfg, contrastive_weight_start=0.5, contrastive_weight_end=0.5, lr_schedule=False),
        replace(cfg, learning_rate=5e-4, lr_factor=0.25),
    ]
    members = [_with_config(m, c) for m, c in zip(make_members(), own, strict=True)]
    result = train_members(cfg, members)
    assert_trained_as_alone(cfg, result, members, atol=1e-5)
    history = result.history
    assert set(history.loc[history["member"] == 1, "contrastive_weight"]) == {0.5}
    assert set(history.loc[history["member"] == 1, "learning_rate"]) == {cfg.learning_rate}
    assert history.loc[history["member"] == 2, "learning_rate"].iloc[0] == 5e-4


def test_a_member_in_original_units_beside_one_in_consistent_units_trains_as_alone():
    design = design_with_head("plugin_units")
    cfg = config(design, dropout=0.1)
    consistent = replace(cfg, recon_in_consistent_units=True)
    middle, spread = (LOWER_LIMITS + UPPER_LIMITS) / 2, (UPPER_LIMITS - LOWER_LIMITS) / 4
    base = make_members()
    members = [
        _with_config(base[0], None, zscore_mean=middle, zscore_std=spread),
        _with_config(base[1], consistent, zscore_mean=middle, zscore_std=spread),
        _with_config(base[2], None),
    ]
    result = train_members(cfg, members)
    # The original units' loss is about 1e6 (Hz against z-scores): compare it relatively.
    assert_trained_as_alone(cfg, result, members, atol=1e-4, rtol=1e-6)


def test_a_member_config_may_differ_only_in_the_member_fields():
    cfg = config()
    member = _with_config(make_members()[0], replace(cfg, batch_size=16))
    with pytest.raises(ValueError, match=r"members\[0\]\.config differs .* \['batch_size'\]"):
        train_members(cfg, [member])
