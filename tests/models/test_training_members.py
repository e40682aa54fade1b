"""``train_members``: members with rows of their own train as they would alone."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from neural_eq_morphing.eq.parameters import LOWER_LIMITS, UPPER_LIMITS
from neural_eq_morphing.models import (
    HISTORY_COLUMNS,
    MEMBER_HISTORY_COLUMNS,
    EpochReport,
    MemberData,
    Objective,
    SemanticEQModel,
    TrainingConfig,
    TrainingResult,
    supervised_contrastive_loss,
    train,
    train_members,
)
from neural_eq_morphing.models.members import _PerMember, _Rows
from neural_eq_morphing.models.perceptual import perceptual_loss
from neural_eq_morphing.models.training import _Group, validation_losses
from tests.models.conftest import design_training, design_with_head, plain_model, with_masks

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
        base.with_changes(decoder_head="separate"),
        base.with_changes(perceptual_weight=1.0),
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
            base, [replace(members[0], config=base.with_changes(decoder_head="plugin_units"))]
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


# --------------------------------------------------------------- the engine's pieces
@pytest.mark.parametrize(
    ("design", "consistent", "weights"),
    [
        ("log2", False, None),
        ("log2", False, (0.3, 0.7, 0.1)),  # the members' own contrastive weights
        ("log2_separate_heads", False, None),
        ("log2_perceptual", False, (0.5, 0.2, 0.3)),
        ("log1", True, None),
    ],
)
def test_the_training_step_gives_each_member_the_gradient_of_its_plain_module(
    design, consistent, weights
):
    """The step's gradient buffer (autograd into the leaves' views) holds, per member,
    autograd's gradient on the plain ``nn.Module`` of its rows alone, with its own
    contrastive weight; padded rows and a member without rows contribute nothing; a
    second step overwrites the buffer, it does not accumulate."""
    cfg = config(design, dropout=0.1, recon_in_consistent_units=consistent)
    seeds, sizes, batch = [3, 8, 5], [5, 9, 0], 9
    generator = torch.Generator().manual_seed(0)
    mean = torch.rand(3, 1, 13, generator=generator) * 100
    std = torch.rand(3, 1, 13, generator=generator) * 50 + 1
    rows_ = _Rows.stack([torch.zeros(1, 13)] * 3, [torch.zeros(1, dtype=torch.int64)] * 3)
    data = _PerMember(rows_, rows_, (mean, std) if consistent else None)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    group = _Group.of(cfg, [0, 1, 2], seeds, [cfg.decoder_head] * 3, generators, data)
    width = sum(group.model.layout.dropout_widths)
    x = torch.rand(3, batch, 13, generator=generator)
    labels = torch.randint(0, 3, (3, batch), generator=generator)
    masks = (torch.rand(3, batch, width, generator=generator) >= 0.1) / 0.9
    valid = torch.arange(batch) < torch.tensor(sizes).unsqueeze(1)
    weight = 0.3 if weights is None else torch.tensor(weights)
    with torch.no_grad():  # as in training: gradients only inside the step
        losses = group.step(x, labels, masks, None, valid, weight, 0.0)
        grad = group.grad.clone()
        again = group.step(x, labels, masks, None, valid, weight, 0.0)
    assert torch.equal(group.grad, grad)
    assert torch.equal(again.reconstruction, losses.reconstruction)
    assert not losses.reconstruction.requires_grad
    assert not grad[2].any()
    assert losses.reconstruction[2] == 0
    for k in (0, 1):
        b = sizes[k]
        plain, _ = plain_model(
            cfg.decoder_head,
            seeds[k],
            hidden_dims=cfg.hidden_dims,
            latent_dim=cfg.latent_dim,
            projection_dim=cfg.projection_dim,
            dropout=cfg.dropout,
        )
        layout = group.model.layout
        assert torch.equal(group.flat[k], layout.flat_from_state_dict(plain.state_dict()))
        plain.train()
        with_masks(plain, masks[k, :b])
        _, projection, output = plain(x[k, :b])
        if consistent:
            output = (output - mean[k]) / std[k]
        recon = F.mse_loss(output, x[k, :b])
        if cfg.perceptual_weight:
            recon = recon + cfg.perceptual_weight * perceptual_loss(output, x[k, :b])
        contrastive = supervised_contrastive_loss(projection, labels[k, :b], cfg.temperature)
        (recon + (0.3 if weights is None else weights[k]) * contrastive).backward()
        expected = layout.flat_from_state_dict({n: p.grad for n, p in plain.named_parameters()})
        scale = expected.abs().max()
        torch.testing.assert_close(grad[k] / scale, expected / scale, rtol=0, atol=2e-6)
        torch.testing.assert_close(losses.reconstruction[k], recon.detach(), rtol=1e-5, atol=0)
        torch.testing.assert_close(
            losses.contrastive[k], contrastive.detach(), rtol=1e-5, atol=1e-6
        )


def test_validation_of_members_equals_validation_of_each_on_its_own_rows():
    generator = torch.Generator().manual_seed(3)
    mean = torch.rand(3, 1, 13, generator=generator)
    std = torch.rand(3, 1, 13, generator=generator) + 0.5
    cfg = config(design_with_head("plugin_units"), recon_in_consistent_units=True)
    generators = [torch.Generator().manual_seed(s) for s in range(3)]
    model = SemanticEQModel.initialised(cfg.network_config(), generators)
    objective = Objective.of(cfg.temperature, 3, (mean, std))
    counts = [37, 16, 5]
    x = torch.rand(3, 37, 13, generator=generator)
    labels = torch.randint(0, 3, (3, 37), generator=generator)
    got = validation_losses(model, objective, x, labels, counts, batch_size=16)
    # Other (finite) values past a member's rows change nothing.
    x2 = x.clone()
    x2[1, 16:] = 0.5
    x2[2, 5:] = torch.rand(32, 13, generator=generator)
    same = validation_losses(model, objective, x2, labels, counts, batch_size=16)
    for name, a, b in zip(got._fields, got, same, strict=True):
        assert torch.equal(a, b), name
    for k, n in enumerate(counts):
        solo = model.member(k)
        own = Objective.of(cfg.temperature, 1, (mean[k : k + 1], std[k : k + 1]))
        expected = validation_losses(solo, own, x[k : k + 1, :n], labels[k : k + 1, :n], [n], 16)
        torch.testing.assert_close(got.reconstruction[k], expected.reconstruction[0])
        torch.testing.assert_close(got.contrastive[k], expected.contrastive[0])
    assert got.reconstruction[0] != got.reconstruction[1]
    with pytest.raises(ValueError, match="counts"):
        validation_losses(model, objective, x, labels, [37, 0, 5], batch_size=16)


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
        cfg.with_changes(
            contrastive_weight_start=0.5, contrastive_weight_end=0.5, lr_schedule=False
        ),
        cfg.with_changes(learning_rate=5e-4, lr_factor=0.25),
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
    consistent = cfg.with_changes(recon_in_consistent_units=True)
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
    member = _with_config(make_members()[0], cfg.with_changes(batch_size=16))
    with pytest.raises(ValueError, match=r"members\[0\]\.config differs .* \['batch_size'\]"):
        train_members(cfg, [member])
