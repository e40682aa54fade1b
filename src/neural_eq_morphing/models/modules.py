"""Plain ``torch.nn`` modules of the semantic EQ model (docs/design.md section 5).

These are the modules used for inference, export and logging. Training runs through the
batched implementation in :mod:`neural_eq_morphing.models.batched`, which stores the very
same parameters stacked over ensemble members; its ``from_models`` and ``export`` copy
parameters between the two forms.

Layout of one model (``hidden_dims = (64, 128, 64)``, ``latent_dim = 32``):

* encoder: residual blocks 13 → 64 → 128 → 64, then ``Linear(64, 64)`` → ReLU →
  ``Linear(64, 32)`` → tanh — the latent;
* projection: ``Linear(32, 128)``, used only by the contrastive loss;
* decoder: residual blocks 32 → 64 → 128 → 64, then ``Linear(64, 13)`` and a head, the
  one thing a design chooses here (``decoder_head``):

  * ``"normalised"`` (Log 2): 13 sigmoid outputs in normalised space, always inside
    [0, 1];
  * ``"plugin_units"`` (Log 1): outputs in plug-in units: gains ``12·tanh``, frequencies
    a sigmoid mapped linearly to the band's limits in Hz, Q ``9.9·sigmoid + 0.1``.

Both heads are written as one affine sigmoid ``scale · sigmoid(slope · o) + shift`` per
column: ``12·tanh(o) = 24·sigmoid(2·o) - 12`` exactly, so the gain columns use slope 2,
scale ``max - min`` and shift ``min``; every other column uses slope 1. The normalised
head uses slope 1, scale 1 and shift 0, which is the plain sigmoid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from neural_eq_morphing.eq.parameters import (
    LOWER_LIMITS,
    N_PARAMETERS,
    UPPER_LIMITS,
    indices_of_kind,
)

DecoderHead = Literal["plugin_units", "normalised"]
#: The decoder heads: outputs in plug-in units (dB, Hz, Q) or in normalised space.
DECODER_HEADS: tuple[str, ...] = get_args(DecoderHead)
#: ``model_config["variant"]`` of files written before ``decoder_head`` replaced it.
LEGACY_VARIANT_HEADS: dict[str, str] = {"log1": "plugin_units", "log2": "normalised"}

#: Widths of the three residual blocks of the encoder (the decoder uses the same widths).
DEFAULT_HIDDEN_DIMS: tuple[int, ...] = (64, 128, 64)
DEFAULT_LATENT_DIM = 32
DEFAULT_PROJECTION_DIM = 128
DEFAULT_DROPOUT = 0.1
#: ``eps`` of every LayerNorm (torch's default).
LAYER_NORM_EPS = 1e-5


def check_decoder_head(decoder_head: str) -> DecoderHead:
    """Return ``decoder_head`` if it names a known head, else raise a ``ValueError``."""
    if decoder_head not in DECODER_HEADS:
        raise ValueError(
            f"unknown decoder_head {decoder_head!r}; expected one of {list(DECODER_HEADS)}"
        )
    return decoder_head  # type: ignore[return-value]


def head_constants(decoder_head: DecoderHead) -> tuple[Tensor, Tensor, Tensor]:
    """Return the per-column ``(slope, scale, shift)`` of a decoder head.

    The head maps the last linear layer's output ``o`` to
    ``scale * sigmoid(slope * o) + shift`` (see the module docstring).

    Args:
        decoder_head: ``"plugin_units"`` or ``"normalised"``.

    Returns:
        Three float32 tensors of shape ``(13,)``.
    """
    check_decoder_head(decoder_head)
    slope = torch.ones(N_PARAMETERS, dtype=torch.float32)
    if decoder_head == "normalised":
        return slope, torch.ones(N_PARAMETERS), torch.zeros(N_PARAMETERS)
    lower = torch.tensor(LOWER_LIMITS, dtype=torch.float64)
    upper = torch.tensor(UPPER_LIMITS, dtype=torch.float64)
    gains = indices_of_kind("gain")
    if not torch.allclose(lower[gains], -upper[gains]):
        raise ValueError("the tanh gain head needs gain limits symmetric around 0 dB")
    slope[gains] = 2.0
    return slope, (upper - lower).float(), lower.float()


def head_activation(output: Tensor, slope: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Apply a decoder head: ``scale * sigmoid(slope * output) + shift`` per column."""
    return torch.addcmul(shift, torch.sigmoid(output * slope), scale)


class ResidualBlock(nn.Module):
    """Linear → LayerNorm → ReLU → Dropout → Linear → LayerNorm, plus a projected skip.

    ``forward(x) = norm2(linear2(dropout(relu(norm1(linear1(x)))))) + skip(x)``.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(in_features, out_features)
        self.norm1 = nn.LayerNorm(out_features, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(out_features, out_features)
        self.norm2 = nn.LayerNorm(out_features, eps=LAYER_NORM_EPS)
        self.skip = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(..., in_features)`` to ``(..., out_features)``."""
        hidden = self.dropout(torch.relu(self.norm1(self.linear1(x))))
        return self.norm2(self.linear2(hidden)) + self.skip(x)


def _residual_stack(in_features: int, widths: Sequence[int], dropout: float) -> nn.ModuleList:
    dims = [in_features, *widths]
    return nn.ModuleList(ResidualBlock(dims[i], dims[i + 1], dropout) for i in range(len(widths)))


class Encoder(nn.Module):
    """Residual MLP from the 13 features to the tanh-bounded latent."""

    def __init__(
        self,
        n_features: int = N_PARAMETERS,
        hidden_dims: Sequence[int] = DEFAULT_HIDDEN_DIMS,
        latent_dim: int = DEFAULT_LATENT_DIM,
        dropout: float = DEFAULT_DROPOUT,
    ) -> None:
        super().__init__()
        self.blocks = _residual_stack(n_features, hidden_dims, dropout)
        self.hidden = nn.Linear(hidden_dims[-1], hidden_dims[-1])
        self.to_latent = nn.Linear(hidden_dims[-1], latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Map features ``(..., 13)`` to latents ``(..., latent_dim)`` in (-1, 1)."""
        for block in self.blocks:
            x = block(x)
        return torch.tanh(self.to_latent(torch.relu(self.hidden(x))))


class Decoder(nn.Module):
    """Residual MLP from the latent to the 13 outputs, with its head (``decoder_head``)."""

    head_slope: Tensor
    head_scale: Tensor
    head_shift: Tensor

    def __init__(
        self,
        decoder_head: DecoderHead,
        n_features: int = N_PARAMETERS,
        hidden_dims: Sequence[int] = DEFAULT_HIDDEN_DIMS,
        latent_dim: int = DEFAULT_LATENT_DIM,
        dropout: float = DEFAULT_DROPOUT,
    ) -> None:
        super().__init__()
        self.decoder_head = check_decoder_head(decoder_head)
        self.blocks = _residual_stack(latent_dim, hidden_dims, dropout)
        self.head = nn.Linear(hidden_dims[-1], n_features)
        slope, scale, shift = head_constants(decoder_head)
        self.register_buffer("head_slope", slope, persistent=False)
        self.register_buffer("head_scale", scale, persistent=False)
        self.register_buffer("head_shift", shift, persistent=False)

    def forward(self, latent: Tensor) -> Tensor:
        """Map latents ``(..., latent_dim)`` to outputs ``(..., 13)``.

        The normalised head's outputs lie in [0, 1]; the plug-in-units head's inside the
        plug-in limits (dB, Hz, Q).
        """
        x = latent
        for block in self.blocks:
            x = block(x)
        return head_activation(self.head(x), self.head_slope, self.head_scale, self.head_shift)


class SemanticEQModel(nn.Module):
    """Encoder, contrastive projection and decoder.

    Args:
        decoder_head: ``"plugin_units"`` or ``"normalised"`` (see the module docstring).
        n_features: Number of EQ parameters (13).
        hidden_dims: Widths of the residual blocks of encoder and decoder.
        latent_dim: Size of the latent space.
        projection_dim: Output size of the contrastive projection.
        dropout: Dropout probability inside the residual blocks.
        seed: When given, parameters are initialised from ``torch.Generator`` seeded with
            it (the same draws as torch's default initialisation under
            ``torch.manual_seed(seed)``); otherwise torch's global generator is used.
    """

    def __init__(
        self,
        decoder_head: DecoderHead,
        *,
        n_features: int = N_PARAMETERS,
        hidden_dims: Sequence[int] = DEFAULT_HIDDEN_DIMS,
        latent_dim: int = DEFAULT_LATENT_DIM,
        projection_dim: int = DEFAULT_PROJECTION_DIM,
        dropout: float = DEFAULT_DROPOUT,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if len(hidden_dims) < 1:
            raise ValueError("hidden_dims needs at least one block width")
        self.decoder_head = check_decoder_head(decoder_head)
        self.n_features = int(n_features)
        self.hidden_dims = tuple(int(d) for d in hidden_dims)
        self.latent_dim = int(latent_dim)
        self.projection_dim = int(projection_dim)
        self.dropout = float(dropout)
        # With a seed, torch's default initialisation must not consume the global RNG.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            self.encoder = Encoder(n_features, self.hidden_dims, latent_dim, dropout)
            self.projection = nn.Linear(latent_dim, projection_dim)
            self.decoder = Decoder(decoder_head, n_features, self.hidden_dims, latent_dim, dropout)
        if seed is not None:
            initialise_parameters(self, torch.Generator().manual_seed(int(seed)))

    @property
    def model_config(self) -> dict[str, Any]:
        """A JSON-able description from which :func:`build_model` rebuilds the module."""
        return {
            "decoder_head": self.decoder_head,
            "n_features": self.n_features,
            "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim,
            "projection_dim": self.projection_dim,
            "dropout": self.dropout,
        }

    def encode(self, x: Tensor) -> Tensor:
        """Map normalised features ``(..., 13)`` to latents ``(..., latent_dim)``."""
        return self.encoder(x)

    def project(self, latent: Tensor) -> Tensor:
        """Map latents to the (unnormalised) contrastive projection."""
        return self.projection(latent)

    def decode(self, latent: Tensor) -> Tensor:
        """Map latents to the decoder output.

        The output is in normalised space or in plug-in units, after ``decoder_head``.
        """
        return self.decoder(latent)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(latent, projection, reconstruction)`` for features ``x``."""
        latent = self.encode(x)
        return latent, self.project(latent), self.decode(latent)


_MODEL_CONFIG_KEYS = (
    "decoder_head",
    "n_features",
    "hidden_dims",
    "latent_dim",
    "projection_dim",
    "dropout",
)


def build_model(config: Mapping[str, Any]) -> SemanticEQModel:
    """Rebuild an (untrained) :class:`SemanticEQModel` from its ``model_config``.

    Load the weights afterwards with ``model.load_state_dict(...)``.

    A config written before ``decoder_head`` replaced ``variant`` (models saved by earlier
    versions of the project) is read too: ``"variant": "log1"`` means
    ``"decoder_head": "plugin_units"`` and ``"log2"`` means ``"normalised"``.
    """
    values = dict(config)
    if "variant" in values:
        if "decoder_head" in values:
            raise ValueError("model config has both 'variant' and 'decoder_head'")
        variant = values.pop("variant")
        if variant not in LEGACY_VARIANT_HEADS:
            raise ValueError(
                f"unknown model variant {variant!r} in an old model config; "
                f"expected one of {list(LEGACY_VARIANT_HEADS)}"
            )
        values["decoder_head"] = LEGACY_VARIANT_HEADS[variant]
    unknown = sorted(set(values) - set(_MODEL_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"unknown model config key(s) {unknown}; expected some of {list(_MODEL_CONFIG_KEYS)}"
        )
    if "decoder_head" not in values:
        raise ValueError("model config lacks the field 'decoder_head'")
    return SemanticEQModel(**values)


@torch.no_grad()
def initialise_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every Linear and LayerNorm of ``module`` in registration order.

    Linear layers get torch's default draws (``kaiming_uniform_(a=sqrt(5))`` for the
    weight, then ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for the bias) from ``generator``;
    LayerNorms get ones and zeros.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
        elif isinstance(layer, nn.LayerNorm):
            layer.reset_parameters()
