"""Plain ``torch.nn`` modules of the semantic EQ model (docs/design.md section 5).

These are the modules used for inference, export and logging. Training runs through the
batched implementation in :mod:`neural_eq_morphing.models.batched`, which stores the very
same parameters stacked over ensemble members; its ``from_models`` and ``export`` copy
parameters between the two forms.

Layout of one model (``hidden_dims = (64, 128, 64)``, ``latent_dim = 32``):

* encoder: residual blocks 13 → 64 → 128 → 64, then ``Linear(64, 64)`` → ReLU →
  ``Linear(64, 32)`` → tanh — the latent;
* projection: ``Linear(32, 128)``, used only by the contrastive loss;
* decoder: residual blocks 32 → 64 → 128 → 64, then ``Linear(64, 13)`` and a head
  (``decoder_head``):

  * ``"normalised"`` (Log 2): 13 sigmoid outputs in normalised space, always inside
    [0, 1];
  * ``"plugin_units"`` (Log 1): outputs in plug-in units: gains ``12·tanh``, frequencies
    a sigmoid mapped linearly to the band's limits in Hz, Q ``9.9·sigmoid + 0.1``;
  * ``"separate"`` (the heads the Log 1 diagnosis asked for): gains ``12·tanh``,
    frequencies a linear output read as ``log10(Hz)``, Q ``0.99·softplus + 0.1``, each
    expressed in the log + min-max space of Log 2's normaliser (plug-in limits, log10 on
    frequencies and Q) so that the loss compares like with like; in eval mode the output
    is clipped to [0, 1], the diagnosis's "hard clipping as the safety net"
    (:func:`separate_head`).

The first two heads are written as one affine sigmoid ``scale · sigmoid(slope · o) +
shift`` per column: ``12·tanh(o) = 24·sigmoid(2·o) - 12`` exactly, so the gain columns use
slope 2, scale ``max - min`` and shift ``min``; every other column uses slope 1. The
normalised head uses slope 1, scale 1 and shift 0, which is the plain sigmoid.

The latent is either the tanh output above or, with ``variational=True`` (the β-VAE
designs, after FlowEQ), a diagonal Gaussian posterior: ``encoder.to_latent`` gives
``2·latent_dim`` values, the mean ``μ`` and the log-variance, training decodes
``z = μ + sigma·ε`` and everything else (encoding, centroids, morphs) uses ``μ``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neural_eq_morphing.eq.parameters import (
    LOWER_LIMITS,
    N_PARAMETERS,
    UPPER_LIMITS,
    indices_of_kind,
)

DecoderHead = Literal["plugin_units", "normalised", "separate"]
#: The decoder heads: outputs in plug-in units (dB, Hz, Q), a sigmoid in normalised space,
#: or separate heads per parameter kind (in normalised space, clipped in eval mode).
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


#: Softplus scale and offset of the separate Q head: ``q = 0.99·softplus(o) + 0.1``.
SEPARATE_Q_SCALE = 0.99
SEPARATE_Q_OFFSET = 0.1


def _log_limits(kind: str) -> tuple[Tensor, Tensor]:
    """log10 of the plug-in limits of one parameter kind's columns, float32."""
    columns = indices_of_kind(kind)  # type: ignore[arg-type]
    return (
        torch.tensor(np.log10(LOWER_LIMITS[columns]), dtype=torch.float32),
        torch.tensor(np.log10(UPPER_LIMITS[columns]), dtype=torch.float32),
    )


def separate_head(output: Tensor) -> Tensor:
    """The separate heads, in the log + min-max space of Log 2's normaliser (unclipped).

    Per column of the last linear layer's output ``o``:

    * gains: ``12·tanh(o)`` dB, i.e. ``(12·tanh(o) + 12) / 24 = sigmoid(2·o)``;
    * frequencies: ``o`` read as ``log10(Hz)``, i.e. ``(o - log10 f_min) / (log10 f_max -
      log10 f_min)`` with the band's plug-in limits (unbounded);
    * Q: ``q = 0.99·softplus(o) + 0.1`` (at least 0.1, unbounded above), i.e.
      ``(log10 q + 1) / 2``.

    Everything is expressed in normalised space, so the loss and the normaliser's inverse
    treat it like the ``normalised`` head; the model clips it to [0, 1] in eval mode.
    """
    gains, freqs, qs = (indices_of_kind(kind) for kind in ("gain", "freq", "q"))
    f_low, f_high = _log_limits("freq")
    q_low, q_high = _log_limits("q")
    q = F.softplus(output[..., qs]) * SEPARATE_Q_SCALE + SEPARATE_Q_OFFSET
    parts = {
        "gain": (gains, torch.sigmoid(2.0 * output[..., gains])),
        "freq": (freqs, (output[..., freqs] - f_low) / (f_high - f_low)),
        "q": (qs, (torch.log10(q) - q_low) / (q_high - q_low)),
    }
    order = torch.tensor([c for columns, _ in parts.values() for c in columns])
    stacked = torch.cat([values for _, values in parts.values()], dim=-1)
    return stacked[..., torch.argsort(order)]


def head_constants(decoder_head: DecoderHead) -> tuple[Tensor, Tensor, Tensor]:
    """Return the per-column ``(slope, scale, shift)`` of an affine-sigmoid decoder head.

    The head maps the last linear layer's output ``o`` to
    ``scale * sigmoid(slope * o) + shift`` (see the module docstring).

    Args:
        decoder_head: ``"plugin_units"`` or ``"normalised"`` (the ``separate`` head is
            no affine sigmoid: :func:`separate_head`).

    Returns:
        Three float32 tensors of shape ``(13,)``.
    """
    check_decoder_head(decoder_head)
    if decoder_head == "separate":
        raise ValueError("the separate head is no affine sigmoid; see separate_head")
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
    """Residual MLP from the 13 features to the latent (tanh-bounded, or a Gaussian's)."""

    def __init__(
        self,
        n_features: int = N_PARAMETERS,
        hidden_dims: Sequence[int] = DEFAULT_HIDDEN_DIMS,
        latent_dim: int = DEFAULT_LATENT_DIM,
        dropout: float = DEFAULT_DROPOUT,
        variational: bool = False,
    ) -> None:
        super().__init__()
        self.variational = bool(variational)
        self.blocks = _residual_stack(n_features, hidden_dims, dropout)
        self.hidden = nn.Linear(hidden_dims[-1], hidden_dims[-1])
        self.to_latent = nn.Linear(hidden_dims[-1], latent_dim * (2 if variational else 1))

    def forward(self, x: Tensor) -> Tensor:
        """Map features ``(..., 13)`` to latents ``(..., latent_dim)`` in (-1, 1).

        A variational encoder returns ``(..., 2·latent_dim)``: the posterior's mean, then
        its log-variance.
        """
        for block in self.blocks:
            x = block(x)
        out = self.to_latent(torch.relu(self.hidden(x)))
        return out if self.variational else torch.tanh(out)


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
        slope, scale, shift = (
            head_constants("normalised")
            if decoder_head == "separate"
            else head_constants(decoder_head)
        )
        self.register_buffer("head_slope", slope, persistent=False)
        self.register_buffer("head_scale", scale, persistent=False)
        self.register_buffer("head_shift", shift, persistent=False)

    def forward(self, latent: Tensor) -> Tensor:
        """Map latents ``(..., latent_dim)`` to outputs ``(..., 13)``.

        The normalised head's outputs lie in [0, 1]; the plug-in-units head's inside the
        plug-in limits (dB, Hz, Q); the separate heads' in normalised space, clipped to
        [0, 1] in eval mode only (training keeps the gradient of out-of-range outputs).
        """
        x = latent
        for block in self.blocks:
            x = block(x)
        if self.decoder_head == "separate":
            output = separate_head(self.head(x))
            return output if self.training else output.clamp(0.0, 1.0)
        return head_activation(self.head(x), self.head_slope, self.head_scale, self.head_shift)


class SemanticEQModel(nn.Module):
    """Encoder, contrastive projection and decoder.

    Args:
        decoder_head: ``"plugin_units"``, ``"normalised"`` or ``"separate"`` (see the
            module docstring).
        n_features: Number of EQ parameters (13).
        hidden_dims: Widths of the residual blocks of encoder and decoder.
        latent_dim: Size of the latent space.
        projection_dim: Output size of the contrastive projection.
        dropout: Dropout probability inside the residual blocks.
        variational: A diagonal Gaussian latent (β-VAE) instead of the tanh one.
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
        variational: bool = False,
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
        self.variational = bool(variational)
        # With a seed, torch's default initialisation must not consume the global RNG.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            self.encoder = Encoder(n_features, self.hidden_dims, latent_dim, dropout, variational)
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
            "variational": self.variational,
        }

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The Gaussian posterior's mean and log-variance, each ``(..., latent_dim)``.

        Raises:
            ValueError: The model is not variational.
        """
        if not self.variational:
            raise ValueError("posterior needs a variational model (variational=True)")
        out = self.encoder(x)
        return out[..., : self.latent_dim], out[..., self.latent_dim :]

    def encode(self, x: Tensor) -> Tensor:
        """Map normalised features ``(..., 13)`` to latents ``(..., latent_dim)``.

        A variational model's latent is its posterior mean.
        """
        return self.posterior(x)[0] if self.variational else self.encoder(x)

    def project(self, latent: Tensor) -> Tensor:
        """Map latents to the (unnormalised) contrastive projection."""
        return self.projection(latent)

    def decode(self, latent: Tensor) -> Tensor:
        """Map latents to the decoder output.

        The output is in normalised space or in plug-in units, after ``decoder_head``.
        """
        return self.decoder(latent)

    def sample(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The latent the decoder sees in training, with the posterior it came from.

        Deterministic model: the latent (and ``mean`` = latent, ``log_variance`` = 0). A
        variational one in training mode: ``z = μ + exp(log_variance / 2) · noise`` with
        ``noise`` standard normal (drawn from torch's global generator when not given);
        in eval mode ``z = μ``.

        Returns:
            ``(z, mean, log_variance)``.
        """
        if not self.variational:
            latent = self.encoder(x)
            return latent, latent, torch.zeros_like(latent)
        mean, log_variance = self.posterior(x)
        if not self.training:
            return mean, mean, log_variance
        if noise is None:
            noise = torch.randn_like(mean)
        return torch.addcmul(mean, torch.exp(0.5 * log_variance), noise), mean, log_variance

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(latent, projection, reconstruction)`` for features ``x``.

        The latent is :meth:`sample`'s ``z`` (``noise`` is passed on to it).
        """
        latent = self.sample(x, noise)[0]
        return latent, self.project(latent), self.decode(latent)


_MODEL_CONFIG_KEYS = (
    "decoder_head",
    "n_features",
    "hidden_dims",
    "latent_dim",
    "projection_dim",
    "dropout",
    "variational",
)


def build_model(config: Mapping[str, Any]) -> SemanticEQModel:
    """Rebuild an (untrained) :class:`SemanticEQModel` from its ``model_config``.

    Load the weights afterwards with ``model.load_state_dict(...)``.

    A config written before ``decoder_head`` replaced ``variant`` (models saved by earlier
    versions of the project) is read too: ``"variant": "log1"`` means
    ``"decoder_head": "plugin_units"`` and ``"log2"`` means ``"normalised"``; one written
    before ``variational`` existed is a deterministic (tanh-latent) model.
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
