"""The training configuration of a design (docs/design.md section 5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from neural_eq_morphing.eq.parameters import N_PARAMETERS
from neural_eq_morphing.models.heads import DecoderHead

#: The :class:`TrainingConfig` fields in which the members of one ensemble may differ
#: (:attr:`MemberData.config`); every other field is the ensemble's. Decoder heads may
#: differ only between the two in normalised space (``normalised`` and ``separate``:
#: :func:`same_output_space`).
MEMBER_FIELDS: tuple[str, ...] = (
    "decoder_head",
    "perceptual_weight",
    "recon_in_consistent_units",
    "learning_rate",
    "contrastive_weight_start",
    "contrastive_weight_end",
    "lr_schedule",
    "lr_factor",
    "lr_patience",
    "lr_threshold",
)


class TrainingConfig(BaseModel):
    """Every hyper-parameter of a training run (docs/design.md section 5).

    A design's values live in ``conf/base/parameters_designs.yml`` (its ``training``
    block, less ``seed``): the fields a design sets have no default here. The fields with
    a default are implementation knobs. One pydantic model is both the schema checked
    before a run (:mod:`~neural_eq_morphing.parameter_schema` derives the parameter
    schema of a design's ``training`` block from these fields) and the object the engine
    reads; every rule that ties fields together is :meth:`_combinations`, once.

    Attributes:
        decoder_head: ``"plugin_units"``, ``"normalised"`` or ``"separate"`` (see
            :mod:`~neural_eq_morphing.models.heads`).
        recon_in_consistent_units: ``plugin_units`` heads only: z-score the decoder
            output before the MSE (the ablation); ``False`` keeps the original units
            mismatch. ``True`` with the ``normalised`` head is an error.
        epochs: Number of epochs.
        batch_size: Rows per training (and validation) batch.
        learning_rate: Initial Adam learning rate.
        dropout: Dropout probability inside the residual blocks.
        hidden_dims: Widths of the residual blocks of encoder and decoder.
        latent_dim: Size of the latent space.
        projection_dim: Output size of the contrastive projection.
        temperature: Temperature of the supervised contrastive loss.
        contrastive_weight_start: Contrastive weight of the first epoch.
        contrastive_weight_end: Contrastive weight of the last epoch (linear in between).
        lr_schedule: Use ReduceLROnPlateau on the validation total loss.
        lr_factor: LR multiplier of the schedule.
        lr_patience: Epochs without improvement before the LR is reduced.
        variational: A β-VAE latent (a diagonal Gaussian posterior, decoded from a
            sample in training) instead of the tanh one.
        kl_weight_start: β of the first epoch (the KL term's weight; variational only).
        kl_weight_end: β of the last epoch (linear in between: KL annealing).
        perceptual_weight: Weight of the perceptual loss (C-weighted dB response error,
            :mod:`~neural_eq_morphing.models.perceptual`) added to the reconstruction
            MSE; 0 for none. Needs a decoder output in Log 2's normalised space.
        betas: Adam's ``(beta1, beta2)`` (torch's default).
        eps: Adam's ``eps`` (torch's default).
        lr_threshold: Relative improvement the schedule counts as better (torch's
            default).
        seeds: Seeds of the members trained (overridable in :func:`train`).
        workers: Member groups trained in parallel threads (see the module docstring);
            ``None`` picks ``min(members, torch.get_num_threads())``. A member's result
            depends on its group only through float round-off; for a fixed config and
            thread count it is bit-reproducible.
        fused_adam: ``torch.optim.Adam(fused=True)``: one kernel call per step for all
            members that share a learning rate; ``False`` uses torch's default
            (single-tensor) Adam, slower. The two agree to float round-off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    decoder_head: DecoderHead
    recon_in_consistent_units: bool
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    hidden_dims: tuple[int, ...] = Field(min_length=1)
    latent_dim: int = Field(ge=1)
    projection_dim: int = Field(ge=1)
    temperature: float = Field(gt=0)
    contrastive_weight_start: float
    contrastive_weight_end: float
    lr_schedule: bool
    lr_factor: float = Field(gt=0, lt=1)
    lr_patience: int = Field(ge=0)
    variational: bool
    kl_weight_start: float = Field(ge=0)
    kl_weight_end: float = Field(ge=0)
    perceptual_weight: float = Field(ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    lr_threshold: float = Field(default=1e-4, ge=0)
    seeds: tuple[int, ...] = (0,)
    workers: int | None = Field(default=None, ge=1)
    fused_adam: bool = True

    @model_validator(mode="after")
    def _combinations(self) -> TrainingConfig:
        """The rules that tie fields together (the only place they are written)."""
        checks = [
            (
                not self.recon_in_consistent_units or self.decoder_head == "plugin_units",
                "recon_in_consistent_units applies to the plugin_units decoder head only, "
                f"not to {self.decoder_head!r}",
            ),
            (
                self.variational or self.kl_weight_start == self.kl_weight_end == 0,
                "kl_weight_start and kl_weight_end apply to variational models only; set "
                "variational: true or both weights to 0",
            ),
            (
                self.perceptual_weight == 0 or self.decoder_head != "plugin_units",
                "perceptual_weight needs a decoder output in normalised space "
                "(decoder_head normalised or separate), not plugin_units",
            ),
            (
                len(set(self.seeds)) == len(self.seeds),
                f"seeds must be distinct, got {list(self.seeds)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingConfig:
        """Build from a plain mapping (a design's ``training`` block less ``seed``).

        Raises:
            ValueError: One line naming each unknown, missing or invalid field and what
                was expected.
        """
        known = list(cls.model_fields)
        unknown = sorted(set(values) - set(known))
        if unknown:
            hint = " (pass the seed to train(seeds=...))" if "seed" in unknown else ""
            raise ValueError(
                f"unknown training parameter(s) {unknown}{hint}; expected some of {known}"
            )
        missing = [name for name in required_fields() if name not in values]
        if missing:
            raise ValueError(
                f"missing training parameter(s) {missing}; a design's training block "
                f"must set all of {list(required_fields())}"
            )
        try:
            return cls.model_validate(dict(values))
        except ValidationError as error:
            raise ValueError(describe_errors(error)) from None

    def with_changes(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes``, validated like a new config."""
        return type(self).from_dict({**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict that :meth:`from_dict` turns back into this config."""
        return self.model_dump(mode="json")

    def network_config(self) -> dict[str, Any]:
        """The :attr:`~neural_eq_morphing.models.network.SemanticEQModel.model_config` it trains."""
        return {
            "decoder_head": self.decoder_head,
            "n_features": N_PARAMETERS,
            "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim,
            "projection_dim": self.projection_dim,
            "dropout": self.dropout,
            "variational": self.variational,
        }

    def contrastive_weights(self) -> list[float]:
        """Contrastive weight per epoch: linear from the start to the end value."""
        return self._schedule(self.contrastive_weight_start, self.contrastive_weight_end)

    def kl_weights(self) -> list[float]:
        """β (the KL term's weight) per epoch: linear from the start to the end value."""
        return self._schedule(self.kl_weight_start, self.kl_weight_end)

    def _schedule(self, start: float, end: float) -> list[float]:
        if self.epochs == 1:
            return [float(start)]
        return [start + (end - start) * e / (self.epochs - 1) for e in range(self.epochs)]


def required_fields() -> tuple[str, ...]:
    """The :class:`TrainingConfig` fields without a default: those a design must set."""
    return tuple(name for name, spec in TrainingConfig.model_fields.items() if spec.is_required())


def describe_errors(error: ValidationError) -> str:
    """A pydantic error as ``; ``-joined lines naming each field and what was expected."""
    lines = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        where = ".".join(str(part) for part in item["loc"])
        lines.append(f"{where}: {message.lower()}, got {item.get('input')!r}" if where else message)
    return "; ".join(lines)
