import io
import json
import logging
import re

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from neural_eq_morphing.eq.parameters import LOWER_LIMITS, UPPER_LIMITS
from neural_eq_morphing.models import (
    DECODER_HEADS,
    HISTORY_COLUMNS,
    ConsoleProgress,
    EpochReport,
    SemanticEQModel,
    TrainingConfig,
    train,
)
from neural_eq_morphing.models.config import required_fields
from neural_eq_morphing.models.losses import (
    Objective,
    kl_per_row,
    reconstruction_per_row,
    supervised_contrastive_loss,
)
from neural_eq_morphing.models.perceptual import perceptual_loss_per_row
from neural_eq_morphing.models.training import validation_losses
from tests.models.conftest import design_training, design_with_head, designs


def synthetic(n: int = 90, terms: int = 4, seed: int = 0):
    """Normalised features in [0, 1] clustered by term, and the term ids."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, terms, n)
    centres = rng.random((terms, 13))
    features = np.clip(centres[labels] + 0.05 * rng.standard_normal((n, 13)), 0, 1)
    return features, labels


SMALL = {"epochs": 3, "batch_size": 16, "hidden_dims": [16, 24, 16], "latent_dim": 8}


def small_config(design: str = "log2", **overrides) -> TrainingConfig:
    """A design's configuration from the YAML, shrunk to a small, fast model."""
    return TrainingConfig.from_dict(
        design_training(design, **{**SMALL, "projection_dim": 12, **overrides})
    )


def weights_of(model: SemanticEQModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("decoder_head", DECODER_HEADS)
def test_same_seed_gives_identical_losses_and_weights(decoder_head):
    x, y = synthetic()
    config = small_config(design_with_head(decoder_head))
    first = train(config, x, y, x[:40], y[:40], seeds=[7])
    second = train(config, x, y, x[:40], y[:40], seeds=[7])
    assert first.history.equals(second.history)
    a, b = weights_of(first.models[0]), weights_of(second.models[0])
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train(config, x, y, x[:40], y[:40], seeds=[8])
    assert not other.history["train_loss"].equals(first.history["train_loss"])


def test_parallel_ensemble_is_deterministic():
    x, y = synthetic()
    config = small_config(workers=2)
    first = train(config, x, y, x, y, seeds=[0, 1, 2])
    second = train(config, x, y, x, y, seeds=[0, 1, 2])
    assert first.history.equals(second.history)
    for a, b in zip(first.models, second.models, strict=True):
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


@pytest.mark.parametrize("workers", [1, 2])
def test_ensemble_member_matches_training_alone(workers):
    x, y = synthetic()
    config = small_config(epochs=4, workers=workers)
    seeds = [3, 11, 5]
    ensemble = train(config, x, y, x, y, seeds=seeds)
    assert ensemble.seeds == seeds
    for k, seed in enumerate(seeds):
        alone = train(config, x, y, x, y, seeds=[seed])
        got = ensemble.history[ensemble.history["seed"] == seed].reset_index(drop=True)
        for column in ("train_loss", "val_loss", "val_contrastive", "learning_rate"):
            np.testing.assert_allclose(got[column], alone.history[column], rtol=0, atol=1e-4)
        a, b = weights_of(ensemble.models[k]), weights_of(alone.models[0])
        assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-4


def test_history_layout_and_schedules():
    x, y = synthetic()
    config = small_config(
        epochs=5,
        lr_schedule=True,
        lr_patience=0,
        lr_threshold=10.0,
        contrastive_weight_start=0.1,
        contrastive_weight_end=0.5,
    )
    result = train(config, x, y, x, y, seeds=[2, 1])
    history = result.history
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history["seed"].dtype == np.int64
    assert history["epoch"].dtype == np.int64
    assert len(history) == 2 * 5
    assert history["seed"].tolist() == [2] * 5 + [1] * 5  # the order the seeds were given
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5] * 2
    np.testing.assert_allclose(history["contrastive_weight"][:5], [0.1, 0.2, 0.3, 0.4, 0.5])
    # threshold 10 makes every epoch "not better" (as in torch, even the first one against
    # best = inf): with patience 0 the LR halves after every epoch.
    np.testing.assert_allclose(history["learning_rate"][:5], [1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5])
    np.testing.assert_allclose(
        history["train_loss"],
        history["train_reconstruction"]
        + history["contrastive_weight"] * history["train_contrastive"],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        history["val_loss"],
        history["val_reconstruction"] + history["contrastive_weight"] * history["val_contrastive"],
        rtol=1e-6,
    )
    assert result.timing.epochs == 5
    assert result.timing.members == 2
    assert len(result.timing.epoch_s) == 5
    assert result.timing.ms_per_model_epoch > 0


def test_history_columns_carry_the_values_reported_under_the_same_name():
    x, y = synthetic()
    reports: list[EpochReport] = []
    result = train(
        small_config(workers=2), x, y, x[:50], y[:50], seeds=[5, 6, 7], progress=reports.append
    )
    named = {
        "train_loss": "train_loss",
        "val_loss": "val_loss",
        "val_reconstruction": "val_reconstruction",
        "val_contrastive": "val_contrastive",
        "learning_rates": "learning_rate",
    }
    for report in reports:
        rows = result.history[result.history["epoch"] == report.epoch]
        assert tuple(rows["seed"]) == report.seeds
        for field, column in named.items():
            assert tuple(rows[column]) == getattr(report, field), column
        assert (rows["contrastive_weight"] == report.contrastive_weight).all()
    # The columns are not interchangeable: a mix-up would show here.
    assert not result.history["val_reconstruction"].equals(result.history["val_contrastive"])


@pytest.mark.parametrize("design", list(designs()))
def test_every_design_in_the_yaml_gives_a_config(design):
    block = designs()[design]["training"]
    config = TrainingConfig.from_dict(design_training(design))
    for name in required_fields():
        expected = block[name]
        got = getattr(config, name)
        assert (list(got) if isinstance(got, tuple) else got) == expected, name
    weights = config.contrastive_weights()
    assert len(weights) == block["epochs"]
    assert weights[0] == pytest.approx(block["contrastive_weight_start"])
    assert weights[-1] == pytest.approx(block["contrastive_weight_end"])
    assert config.network_config()["decoder_head"] == block["decoder_head"]
    assert config.seeds == (0,)  # the seed is train()'s argument, not part of the block


def test_from_dict_names_missing_and_unknown_keys():
    values = design_training("log2")
    del values["epochs"], values["decoder_head"]
    with pytest.raises(
        ValueError, match=r"missing training parameter\(s\) \['decoder_head', 'epochs'\]"
    ):
        TrainingConfig.from_dict(values)
    with pytest.raises(ValueError, match=r"unknown training parameter.*learning_rte.*expected"):
        TrainingConfig.from_dict({**design_training("log2"), "learning_rte": 1.0})
    with pytest.raises(ValueError, match=re.escape("train(seeds=...)")):
        TrainingConfig.from_dict(designs()["log2"]["training"])  # still holds its seed
    # No design value has a default: every one must come from the YAML.
    with pytest.raises(ValidationError, match="epochs\n  Field required"):
        TrainingConfig()  # type: ignore[call-arg]


def test_consistent_units_only_with_the_plugin_units_head():
    with pytest.raises(ValueError, match="plugin_units decoder head only"):
        small_config(design_with_head("normalised"), recon_in_consistent_units=True)
    assert small_config(design_with_head("plugin_units"), recon_in_consistent_units=True)


def test_perceptual_loss_needs_a_decoder_output_in_normalised_space():
    with pytest.raises(ValueError, match="normalised space"):
        small_config(design_with_head("plugin_units"), perceptual_weight=1.0)
    with pytest.raises(
        ValueError, match="perceptual_weight: input should be greater than or equal to 0"
    ):
        small_config(perceptual_weight=-1.0)
    assert small_config(design_with_head("separate"), perceptual_weight=1.0)


def test_consistent_units_change_the_loss_and_need_the_normaliser():
    x, y = synthetic()
    design = design_with_head("plugin_units")
    mean, std = (LOWER_LIMITS + UPPER_LIMITS) / 2, (UPPER_LIMITS - LOWER_LIMITS) / 4
    plain = train(
        small_config(design, recon_in_consistent_units=False),
        x,
        y,
        x,
        y,
        seeds=[0],
        zscore_mean=mean,
        zscore_std=std,
    )
    consistent = train(
        small_config(design, recon_in_consistent_units=True),
        x,
        y,
        x,
        y,
        seeds=[0],
        zscore_mean=mean,
        zscore_std=std,
    )
    # Decoder outputs in Hz against targets near 0: the original mismatch is huge;
    # z-scored outputs lie within about ±2 of the targets.
    assert plain.history["train_reconstruction"].iloc[0] > 1e4
    assert consistent.history["train_reconstruction"].iloc[0] < 10
    with pytest.raises(ValueError, match="zscore_mean"):
        train(small_config(design, recon_in_consistent_units=True), x, y, x, y, seeds=[0])


@pytest.mark.parametrize("decoder_head", DECODER_HEADS)
def test_models_are_eval_mode_modules_with_config(decoder_head):
    x, y = synthetic()
    result = train(small_config(design_with_head(decoder_head)), x, y, x, y, seeds=[0, 1])
    assert len(result.models) == 2
    for model in result.models:
        assert isinstance(model, SemanticEQModel)
        assert not model.training
        assert model.model_config["latent_dim"] == 8
        assert model.model_config["decoder_head"] == decoder_head
        json.dumps(model.model_config)
        # Ordinary parameters: the exported model can be fine-tuned with autograd.
        model.train()
        latent, projection, output = model(torch.as_tensor(x[:8], dtype=torch.float32))
        (output.sum() + latent.sum() + projection.sum()).backward()
        assert all(p.grad is not None for p in model.parameters())


def test_training_leaves_the_global_rng_and_thread_count_alone():
    x, y = synthetic()
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    train(small_config(workers=2), x, y, x, y, seeds=[0, 1])
    train(small_config(), x, y, x, y, seeds=[0, 1])
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_input_validation():
    x, y = synthetic()
    config = small_config()
    with pytest.raises(ValueError, match="shape"):
        train(config, x[:, :12], y, x, y)
    with pytest.raises(ValueError, match="integer"):
        train(config, x, y.astype(float), x, y)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train(config, bad, y, x, y)
    with pytest.raises(ValueError, match="distinct"):
        train(config, x, y, x, y, seeds=[1, 1])
    with pytest.raises(ValueError, match="decoder_head"):
        small_config(decoder_head="log2")


def test_config_dict_round_trip():
    config = small_config("log1", seeds=(1, 2), dropout=0.2)
    assert TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_progress_callback_gets_every_epoch_once_with_all_members():
    x, y = synthetic()
    reports: list[EpochReport] = []
    train(small_config(epochs=4, workers=2), x, y, x, y, seeds=[0, 1, 2], progress=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    assert all(r.seeds == (0, 1, 2) and len(r.val_loss) == 3 for r in reports)


def _report(epoch: int, epochs: int = 20) -> EpochReport:
    return EpochReport(epoch, epochs, (0,), (1.0,), (2.0,), (1.5,), (1.0,), 0.5, (1e-3,), 1.0)


def test_console_progress_logs_without_a_terminal(caplog):
    progress = ConsoleProgress("log2", log_every=10, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="neural_eq_morphing.models.progress"):
        for epoch in range(1, 21):
            progress(_report(epoch))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "epoch 10/20" in lines[0]
    assert "epoch 20/20" in lines[1]


def test_console_progress_draws_a_bar_on_a_terminal():
    stream = io.StringIO()
    progress = ConsoleProgress("log2", stream=stream, bar=True)
    for epoch in range(1, 21):
        progress(_report(epoch))
    text = stream.getvalue()
    assert "20/20" in text
    assert text.endswith("\n")


# ------------------------------------------------------------------- validation
def _validation_rows() -> tuple[torch.Tensor, torch.Tensor]:
    """37 rows (two batches of 16 and one of 5) and their labels of 3 terms."""
    generator = torch.Generator().manual_seed(1)
    return torch.rand(37, 13, generator=generator), torch.randint(0, 3, (37,), generator=generator)


@pytest.mark.parametrize(
    ("decoder_head", "perceptual", "variational"),
    [("normalised", 0.0, False), ("separate", 0.5, True), ("normalised", 1.0, False)],
)
def test_validation_is_the_mean_over_consecutive_batches(decoder_head, perceptual, variational):
    """Eval mode (the posterior mean, the clipped separate heads), the training losses
    (with the perceptual term) and the KL, as a loop over a non-shuffled DataLoader."""
    model_config = SemanticEQModel(
        decoder_head, seed=0, hidden_dims=(16, 24, 16), latent_dim=3, variational=variational
    ).model_config
    generators = [torch.Generator().manual_seed(s) for s in (4, 5)]
    model = SemanticEQModel.initialised(model_config, generators)
    x, labels = _validation_rows()
    objective = Objective.of(0.1, 2, perceptual_weight=perceptual)
    got = validation_losses(
        model, objective, x.expand(2, -1, -1), labels.expand(2, -1), [37, 37], 16
    )
    for k in range(2):
        member = model.member(k)
        recon, contrastive, kl, rows = [], [], [], []
        with torch.no_grad():
            for start in range(0, 37, 16):
                xb, yb = x[start : start + 16], labels[start : start + 16]
                _, mean, log_variance = member.sample(xb)
                output = member.decode(mean)
                assert output.min() >= 0
                assert output.max() <= 1
                per_row = reconstruction_per_row(output, xb)
                if perceptual:
                    per_row = per_row + perceptual * perceptual_loss_per_row(output, xb)
                recon.append(per_row.mean())
                rows.append(per_row)
                contrastive.append(supervised_contrastive_loss(member.project(mean), yb, 0.1))
                if variational:
                    kl.append(kl_per_row(mean, log_variance).mean())
        # The mean of the batches' means, not of all rows (the last batch is smaller).
        assert abs(torch.stack(recon).mean() - torch.cat(rows).mean()) > 1e-5
        torch.testing.assert_close(got.reconstruction[k], torch.stack(recon).mean())
        torch.testing.assert_close(got.contrastive[k], torch.stack(contrastive).mean())
        if variational:
            torch.testing.assert_close(got.kl[k], torch.stack(kl).mean())
            assert got.kl[k] > 0
        else:
            assert got.kl[k] == 0


def test_validation_counts_must_fit_the_rows():
    model = SemanticEQModel("normalised", members=2, seed=0, hidden_dims=(8,), latent_dim=2)
    objective = Objective.of(0.1, 2)
    x, labels = torch.rand(2, 5, 13), torch.zeros(2, 5, dtype=torch.int64)
    for counts in ([5, 0], [5, 6], [5]):
        with pytest.raises(ValueError, match="counts must be 2 values in"):
            validation_losses(model, objective, x, labels, counts, 4)
