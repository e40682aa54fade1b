"""The semantic EQ network (docs/design.md section 5): one definition, batched over members.

Layout of one model (``hidden_dims = (64, 128, 64)``, ``latent_dim = 32``):

* encoder: residual blocks 13 → 64 → 128 → 64, then ``Linear(64, 64)`` → ReLU →
  ``Linear(64, 32)`` → tanh — the latent;
* projection: ``Linear(32, 128)``, used only by the contrastive loss;
* decoder: residual blocks 32 → 64 → 128 → 64, then ``Linear(64, 13)`` and a decoder
  head (:mod:`~neural_eq_morphing.models.heads`).

A residual block is ``norm2(linear2(dropout(relu(norm1(linear1(x)))))) + skip(x)``
(LayerNorm ``eps`` :data:`LAYER_NORM_EPS`). With ``variational=True`` (the β-VAE designs,
after FlowEQ) the latent is a diagonal Gaussian posterior instead: ``to_latent`` gives
``2·latent_dim`` values, the mean ``μ`` and the log-variance; training decodes
``z = μ + sigma·ε`` and everything else (encoding, centroids, morphs) uses ``μ``.

:class:`SemanticEQModel` holds ``M`` members (models with the same layout) in one flat
float32 parameter of shape ``(M, P)`` (:class:`ParameterLayout`), seen through
per-parameter views from one ``torch.split``. Every linear layer is a batched matmul over
the member dimension (``torch.baddbmm``), and a residual block's first linear layer and
its skip share their input, so they are one matmul to ``2·out`` columns. Gradients come
from autograd. ``M = 1`` is the model that is trained alone, saved and served; an
ensemble of ``M`` trains as one model of ``M`` members, each member's output depending on
its own row of the parameter only. At this size an eager step's time goes to
per-operation overhead, not arithmetic (docs/design.md section 9), which is what the
batching removes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neural_eq_morphing.eq.parameters import N_PARAMETERS
from neural_eq_morphing.models.heads import (
    LEGACY_VARIANT_HEADS,
    DecoderHead,
    check_decoder_head,
    decoder_output,
    same_output_space,
)

#: Widths of the three residual blocks of the encoder (the decoder uses the same widths).
DEFAULT_HIDDEN_DIMS: tuple[int, ...] = (64, 128, 64)
DEFAULT_LATENT_DIM = 32
DEFAULT_PROJECTION_DIM = 128
DEFAULT_DROPOUT = 0.1
#: ``eps`` of every LayerNorm (torch's default).
LAYER_NORM_EPS = 1e-5
#: The keys of a ``model_config``.
MODEL_CONFIG_KEYS = (
    "decoder_head",
    "n_features",
    "hidden_dims",
    "latent_dim",
    "projection_dim",
    "dropout",
    "variational",
)


@dataclass(frozen=True)
class _Piece:
    """One ``nn.Linear``/``nn.LayerNorm`` tensor of the plain-module naming, in an entry.

    Weights (2-D, ``(out, in)`` in that naming) are stored transposed, ``(in, out)``;
    vectors as one row ``(1, n)``; ``start`` is the first column inside the entry.
    """

    key: str
    start: int
    columns: int
    is_weight: bool


@dataclass(frozen=True)
class ParameterEntry:
    """One parameter view: its name, per-member shape and the pieces it is made of."""

    name: str
    shape: tuple[int, int]
    pieces: tuple[_Piece, ...]

    @property
    def numel(self) -> int:
        """Number of values per member."""
        return self.shape[0] * self.shape[1]


class ParameterLayout:
    """Where each parameter sits in a member's row of the flat ``(M, P)`` parameter.

    Per residual block (prefix ``encoder.blocks.j`` or ``decoder.blocks.j``): ``w_in``
    ``(in, 2·out)`` = ``[linear1.weightᵀ | skip.weightᵀ]``, ``b_in`` ``(1, 2·out)``,
    ``gamma1``/``beta1`` (``norm1``), ``w2``/``b2`` (``linear2``), ``gamma2``/``beta2``
    (``norm2``). Each plain linear layer (``encoder.hidden``, ``encoder.to_latent``,
    ``projection``, ``decoder.head``) has ``w`` ``(in, out)`` and ``b`` ``(1, out)``.
    The pieces keep the names of the equivalent ``nn.Linear``/``nn.LayerNorm`` module
    (``encoder.blocks.0.linear1.weight`` …), in that module's registration order
    (:attr:`module_order`): the order of the initial draws, and the keys of files in the
    first model format (:func:`flat_from_state_dict`).

    Args:
        model_config: A :attr:`SemanticEQModel.model_config` dict.
    """

    def __init__(self, model_config: Mapping[str, Any]) -> None:
        n_features = int(model_config["n_features"])
        hidden = [int(d) for d in model_config["hidden_dims"]]
        latent = int(model_config["latent_dim"])
        self.entries: list[ParameterEntry] = []
        #: Piece keys in the plain module's registration order, with their entries.
        self.module_order: list[tuple[_Piece, ParameterEntry]] = []
        self.encoder_blocks = self._blocks("encoder", n_features, hidden)
        self._linear("encoder.hidden", hidden[-1], hidden[-1])
        # A variational encoder gives the posterior's mean and log-variance side by side.
        latent_out = latent * (2 if model_config.get("variational", False) else 1)
        self._linear("encoder.to_latent", hidden[-1], latent_out)
        self._linear("projection", latent, int(model_config["projection_dim"]))
        self.decoder_blocks = self._blocks("decoder", latent, hidden)
        self._linear("decoder.head", hidden[-1], n_features)
        self.sizes = [entry.numel for entry in self.entries]
        self.size = sum(self.sizes)
        #: Residual-block widths of the dropout masks, encoder then decoder.
        self.dropout_widths = [o for _, o in self.encoder_blocks + self.decoder_blocks]

    def _add(self, name: str, shape: tuple[int, int], pieces: Sequence[_Piece]) -> ParameterEntry:
        entry = ParameterEntry(name, shape, tuple(pieces))
        self.entries.append(entry)
        return entry

    def _linear(self, name: str, n_in: int, n_out: int) -> None:
        w = self._add(f"{name}.w", (n_in, n_out), [_Piece(f"{name}.weight", 0, n_out, True)])
        b = self._add(f"{name}.b", (1, n_out), [_Piece(f"{name}.bias", 0, n_out, False)])
        self.module_order += [(w.pieces[0], w), (b.pieces[0], b)]

    def _blocks(self, stack: str, n_in: int, widths: Sequence[int]) -> list[tuple[int, int]]:
        dims = [n_in, *widths]
        for j in range(len(widths)):
            i, o = dims[j], dims[j + 1]
            p = f"{stack}.blocks.{j}"
            linear1_w = _Piece(f"{p}.linear1.weight", 0, o, True)
            skip_w = _Piece(f"{p}.skip.weight", o, o, True)
            linear1_b = _Piece(f"{p}.linear1.bias", 0, o, False)
            skip_b = _Piece(f"{p}.skip.bias", o, o, False)
            w_in = self._add(f"{p}.w_in", (i, 2 * o), [linear1_w, skip_w])
            b_in = self._add(f"{p}.b_in", (1, 2 * o), [linear1_b, skip_b])
            vectors = {}
            for field, key in (("gamma1", "norm1.weight"), ("beta1", "norm1.bias")):
                vectors[field] = self._add(
                    f"{p}.{field}", (1, o), [_Piece(f"{p}.{key}", 0, o, False)]
                )
            w2 = self._add(f"{p}.w2", (o, o), [_Piece(f"{p}.linear2.weight", 0, o, True)])
            b2 = self._add(f"{p}.b2", (1, o), [_Piece(f"{p}.linear2.bias", 0, o, False)])
            for field, key in (("gamma2", "norm2.weight"), ("beta2", "norm2.bias")):
                vectors[field] = self._add(
                    f"{p}.{field}", (1, o), [_Piece(f"{p}.{key}", 0, o, False)]
                )
            self.module_order += [
                (linear1_w, w_in),
                (linear1_b, b_in),
                *((v.pieces[0], v) for v in (vectors["gamma1"], vectors["beta1"])),
                (w2.pieces[0], w2),
                (b2.pieces[0], b2),
                *((v.pieces[0], v) for v in (vectors["gamma2"], vectors["beta2"])),
                (skip_w, w_in),
                (skip_b, b_in),
            ]
        return [(dims[j], dims[j + 1]) for j in range(len(widths))]

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """Per-parameter views ``(M, *shape)`` of a flat ``(M, P)`` tensor (one split)."""
        if flat.ndim != 2 or flat.shape[1] != self.size:
            raise ValueError(
                f"expected a flat parameter of shape (M, {self.size}), got {tuple(flat.shape)}"
            )
        members = flat.shape[0]
        parts = torch.split(flat, self.sizes, dim=1)
        return {
            entry.name: part.view(members, *entry.shape)
            for entry, part in zip(self.entries, parts, strict=True)
        }

    def initial_row(self, generator: torch.Generator) -> Tensor:
        """One member's initial parameters ``(P,)``, drawn from ``generator``.

        The draws of torch's default initialisation, in the plain module's registration
        order: per linear layer ``kaiming_uniform_(a=√5)`` on its ``(out, in)`` weight,
        then ``U(-1/√in, 1/√in)`` for its bias; LayerNorms get ones and zeros.
        """
        values = self._blank()
        fan_in = 0
        for piece, entry in self.module_order:
            block = values[entry.name][:, piece.start : piece.start + piece.columns]
            if piece.is_weight:
                weight = torch.empty(piece.columns, entry.shape[0])
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                block.copy_(weight.t())
                fan_in = entry.shape[0]
            elif ".norm" in piece.key:
                block.fill_(1.0 if piece.key.endswith(".weight") else 0.0)
            else:
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(block, -bound, bound, generator=generator)
        return self._join(values)

    def flat_from_state_dict(self, state: Mapping[str, Tensor]) -> Tensor:
        """A row ``(P,)`` from the per-layer tensors of the first model format (``/1``)."""
        expected = {piece.key for piece, _ in self.module_order}
        if set(state) != expected:
            missing, unknown = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(
                f"the weights do not fit the model's layout: missing {missing}, unknown {unknown}"
            )
        values = self._blank()
        for piece, entry in self.module_order:
            tensor = state[piece.key].detach().to(torch.float32)
            block = values[entry.name][:, piece.start : piece.start + piece.columns]
            block.copy_(tensor.t() if piece.is_weight else tensor[None])
        return self._join(values)

    def _blank(self) -> dict[str, Tensor]:
        return {entry.name: torch.zeros(entry.shape) for entry in self.entries}

    def _join(self, values: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([values[entry.name].reshape(-1) for entry in self.entries])


class Forward(NamedTuple):
    """A forward pass of ``M`` members, each tensor with leading dims ``(M, B)``.

    ``latent`` is what the decoder and the projection see (``z`` of a variational model
    in training, else its mean); ``posterior`` is a variational model's ``(mean,
    log_variance)``, ``None`` otherwise.
    """

    latent: Tensor
    projection: Tensor
    output: Tensor
    posterior: tuple[Tensor, Tensor] | None


def _layer_norm(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """LayerNorm of ``x`` ``(M, B, n)`` with each member's ``gamma``, ``beta`` ``(M, 1, n)``.

    One member: torch's fused affine LayerNorm (one op forward and backward); several:
    LayerNorm without affine, then the members' affine.
    """
    n = x.shape[-1]
    if x.shape[0] == 1:
        return F.layer_norm(x, [n], gamma.view(n), beta.view(n), LAYER_NORM_EPS)
    return torch.addcmul(beta, F.layer_norm(x, [n], eps=LAYER_NORM_EPS), gamma)


def _block(x: Tensor, v: Mapping[str, Tensor], prefix: str, mask: Tensor | None) -> Tensor:
    """One residual block on ``x`` ``(M, B, in)``; ``mask`` is the scaled dropout mask."""
    out = v[f"{prefix}.gamma1"].shape[-1]
    # One split: its backward is one cat, where two slices would be two zero-filled copies.
    a, skip = torch.baddbmm(v[f"{prefix}.b_in"], x, v[f"{prefix}.w_in"]).split(out, dim=-1)
    r = torch.relu(_layer_norm(a, v[f"{prefix}.gamma1"], v[f"{prefix}.beta1"]))
    if mask is not None:
        r = r * mask
    z = torch.baddbmm(v[f"{prefix}.b2"], r, v[f"{prefix}.w2"])
    return _layer_norm(z, v[f"{prefix}.gamma2"], v[f"{prefix}.beta2"]) + skip


def _linear(x: Tensor, v: Mapping[str, Tensor], name: str) -> Tensor:
    return torch.baddbmm(v[f"{name}.b"], x, v[f"{name}.w"])


class SemanticEQModel(nn.Module):
    """``M`` members of the semantic EQ network (encoder, contrastive projection, decoder).

    Args:
        decoder_head: ``"plugin_units"``, ``"normalised"`` or ``"separate"``
            (:mod:`~neural_eq_morphing.models.heads`).
        n_features: Number of EQ parameters (13).
        hidden_dims: Widths of the residual blocks of encoder and decoder.
        latent_dim: Size of the latent space.
        projection_dim: Output size of the contrastive projection.
        dropout: Dropout probability inside the residual blocks.
        variational: A diagonal Gaussian latent (β-VAE) instead of the tanh one.
        seed: When given, the parameters are drawn from a ``torch.Generator`` seeded with
            it (torch's global RNG untouched), else from torch's global generator.
        generators: One generator per member to draw its parameters from (instead of
            ``seed``).
        flat: The parameters ``(M, P)`` themselves (copied; nothing is drawn).
        members: Number of members ``M``.
        member_heads: Each member's decoder head when they differ (only the normalised
            and separate heads, both in normalised space, may mix); ``None``: all
            ``decoder_head``.

    The methods :meth:`encode`, :meth:`posterior`, :meth:`project`, :meth:`decode`,
    :meth:`sample` and :meth:`forward` take inputs of any leading shape ``(..., d)`` for a
    single member; for ``M > 1`` the leading dims are ``(M, B)`` (or ``(B,)``, shared by
    all members). In training mode a call draws its dropout masks (and a variational
    latent's noise, when not given) from torch's global generator; the training engine
    gives its own draws to :meth:`run` instead.
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
        members: int = 1,
        member_heads: Sequence[str] | None = None,
        generators: Sequence[torch.Generator] | None = None,
        flat: Tensor | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if len(hidden_dims) < 1:
            raise ValueError("hidden_dims needs at least one block width")
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        self.decoder_head = check_decoder_head(decoder_head)
        self.n_features = int(n_features)
        self.hidden_dims = tuple(int(d) for d in hidden_dims)
        self.latent_dim = int(latent_dim)
        self.projection_dim = int(projection_dim)
        self.dropout = float(dropout)
        self.variational = bool(variational)
        heads = [decoder_head] * members if member_heads is None else list(member_heads)
        if len(heads) != members:
            raise ValueError(f"member_heads needs {members} heads, got {len(heads)}")
        for head in heads:
            check_decoder_head(head)
        if not same_output_space([*heads, decoder_head]):
            raise ValueError(
                "only the normalised and separate heads (both in normalised space) may mix "
                f"in one ensemble, got {sorted({*heads, decoder_head})}"
            )
        self.member_heads = heads
        self.layout = ParameterLayout(self.model_config)
        if flat is not None:
            if tuple(flat.shape) != (members, self.layout.size):
                raise ValueError(
                    f"the weights do not fit the model: expected a flat parameter of shape "
                    f"({members}, {self.layout.size}), got {tuple(flat.shape)}"
                )
            #: The parameters of every member, ``(M, P)``.
            self.flat = nn.Parameter(flat.detach().to(torch.float32).clone())
            return
        if generators is None:
            one = torch.default_generator if seed is None else torch.Generator().manual_seed(seed)
            generators = [one] * members
        if len(generators) != members:
            raise ValueError(f"need {members} generators, one per member, got {len(generators)}")
        rows = [self.layout.initial_row(generator) for generator in generators]
        self.flat = nn.Parameter(torch.stack(rows))

    @classmethod
    def initialised(
        cls,
        model_config: Mapping[str, Any],
        generators: Sequence[torch.Generator],
        member_heads: Sequence[str] | None = None,
    ) -> SemanticEQModel:
        """One member per generator, each drawn from its own generator (global RNG untouched)."""
        return build_model(
            model_config, members=len(generators), member_heads=member_heads, generators=generators
        )

    @property
    def members(self) -> int:
        """Number of members ``M``."""
        return self.flat.shape[0]

    @property
    def model_config(self) -> dict[str, Any]:
        """A JSON-able description from which :func:`build_model` rebuilds the module.

        An ensemble's members may have heads of their own (:attr:`member_heads`).
        """
        return {
            "decoder_head": self.decoder_head,
            "n_features": self.n_features,
            "hidden_dims": list(self.hidden_dims),
            "latent_dim": self.latent_dim,
            "projection_dim": self.projection_dim,
            "dropout": self.dropout,
            "variational": self.variational,
        }

    def member(self, k: int) -> SemanticEQModel:
        """Member ``k`` as a model of its own (a copy, eval mode): what is saved and served."""
        config = {**self.model_config, "decoder_head": self.member_heads[k]}
        return build_model(config, flat=self.flat[k : k + 1]).eval()

    # ------------------------------------------------------------------ forward
    def run(
        self,
        x: Tensor,
        *,
        params: Mapping[str, Tensor] | None = None,
        masks: Tensor | None = None,
        noise: Tensor | None = None,
        training: bool = False,
    ) -> Forward:
        """The forward pass of every member on ``x`` ``(M, B, 13)``.

        Args:
            x: Features, member ``k``'s rows in ``x[k]``.
            params: The per-parameter views to use (the engine's leaves,
                :meth:`ParameterLayout.views` of its buffer); default views of
                :attr:`flat`.
            masks: Scaled dropout masks ``(M, B, sum(layout.dropout_widths))``, or
                ``None`` (no dropout).
            noise: Standard normal draws ``(M, B, latent_dim)`` that sample a
                variational latent; ``None``: its mean.
            training: Training-mode heads (the separate heads unclipped).
        """
        v = self.layout.views(self.flat) if params is None else params
        mask_views = self._split_masks(masks)
        n_encoder = len(self.layout.encoder_blocks)
        latent, posterior = self._encode(x, v, mask_views[:n_encoder], noise)
        projection = _linear(latent, v, "projection")
        output = self._decode(latent, v, mask_views[n_encoder:], training)
        return Forward(latent, projection, output, posterior)

    def _encode(
        self,
        x: Tensor,
        v: Mapping[str, Tensor],
        masks: Sequence[Tensor | None],
        noise: Tensor | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """The latent the decoder sees and a variational model's ``(mean, log_variance)``."""
        h = x
        for j, mask in enumerate(masks):
            h = _block(h, v, f"encoder.blocks.{j}", mask)
        out = _linear(torch.relu(_linear(h, v, "encoder.hidden")), v, "encoder.to_latent")
        if not self.variational:
            return torch.tanh(out), None
        mean, log_variance = out.split(self.latent_dim, dim=-1)
        if noise is None:
            return mean, (mean, log_variance)
        return torch.addcmul(mean, (0.5 * log_variance).exp(), noise), (mean, log_variance)

    def _decode(
        self,
        latent: Tensor,
        v: Mapping[str, Tensor],
        masks: Sequence[Tensor | None],
        training: bool,
    ) -> Tensor:
        h = latent
        for j, mask in enumerate(masks):
            h = _block(h, v, f"decoder.blocks.{j}", mask)
        return decoder_output(_linear(h, v, "decoder.head"), self.member_heads, training)

    def _split_masks(self, masks: Tensor | None) -> list[Tensor | None]:
        widths = self.layout.dropout_widths
        if masks is None:
            return [None] * len(widths)
        return list(torch.split(masks, widths, dim=-1))

    def _draw_masks(self, x: Tensor) -> Tensor | None:
        """Training mode's dropout masks for ``x`` ``(M, B, d)``, from the global RNG."""
        if not self.training or self.dropout == 0:
            return None
        width = sum(self.layout.dropout_widths)
        keep = torch.rand(*x.shape[:-1], width).ge_(self.dropout)
        return keep.mul_(1.0 / (1.0 - self.dropout))

    def _batched(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """``x`` ``(..., d)`` as ``(M, B, d)``, and the leading shape to restore."""
        if self.members == 1:
            return x.reshape(1, -1, x.shape[-1]), x.shape[:-1]
        if x.ndim == 2:
            x = x.expand(self.members, *x.shape)
        if x.ndim != 3 or x.shape[0] != self.members:
            raise ValueError(
                f"an ensemble of {self.members} members needs inputs (M, B, d) or (B, d), "
                f"got {tuple(x.shape)}"
            )
        return x, x.shape[:-1]

    def _pass(
        self, x: Tensor, noise: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None, tuple[int, ...]]:
        """``x`` ``(..., 13)`` batched, this mode's dropout masks and noise, the leading shape."""
        batched, shape = self._batched(x)
        if not self.training:
            noise = None
        elif self.variational and noise is None:
            noise = torch.randn(*batched.shape[:-1], self.latent_dim)
        elif noise is not None:
            noise = noise.reshape(*batched.shape[:-1], self.latent_dim)
        return batched, self._draw_masks(batched), noise, shape

    def sample(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The latent the decoder sees, with the posterior it came from: ``(z, mean, log_var)``.

        Deterministic model: the latent (and ``mean`` = latent, ``log_var`` = 0). A
        variational one in training mode: ``z = μ + exp(log_var / 2) · noise`` (noise
        drawn from torch's global generator when not given); in eval mode ``z = μ``.
        Only the encoder runs.
        """
        batched, masks, noise, shape = self._pass(x, noise)
        n_encoder = len(self.layout.encoder_blocks)
        encoder_masks = self._split_masks(masks)[:n_encoder]
        latent, posterior = self._encode(
            batched, self.layout.views(self.flat), encoder_masks, noise
        )
        latent = latent.reshape(*shape, -1)
        if posterior is None:
            return latent, latent, torch.zeros_like(latent)
        mean, log_variance = (t.reshape(*shape, -1) for t in posterior)
        return latent, mean, log_variance

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The Gaussian posterior's mean and log-variance, each ``(..., latent_dim)``.

        Raises:
            ValueError: The model is not variational.
        """
        if not self.variational:
            raise ValueError("posterior needs a variational model (variational=True)")
        _, mean, log_variance = self.sample(x)
        return mean, log_variance

    def encode(self, x: Tensor) -> Tensor:
        """Map normalised features ``(..., 13)`` to latents; a variational model's mean."""
        _, mean, _ = self.sample(x)
        return mean

    def project(self, latent: Tensor) -> Tensor:
        """Map latents to the (unnormalised) contrastive projection."""
        batched, shape = self._batched(latent)
        v = self.layout.views(self.flat)
        return _linear(batched, v, "projection").reshape(*shape, -1)

    def decode(self, latent: Tensor) -> Tensor:
        """Map latents to the decoder output (normalised space or plug-in units)."""
        batched, shape = self._batched(latent)
        masks = self._split_masks(self._draw_masks(batched))
        n_encoder = len(self.layout.encoder_blocks)
        output = self._decode(
            batched, self.layout.views(self.flat), masks[n_encoder:], self.training
        )
        return output.reshape(*shape, -1)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``(latent, projection, reconstruction)`` for features ``x`` (one pass)."""
        batched, masks, noise, shape = self._pass(x, noise)
        fwd = self.run(batched, masks=masks, noise=noise, training=self.training)
        return tuple(t.reshape(*shape, -1) for t in (fwd.latent, fwd.projection, fwd.output))  # type: ignore[return-value]


def build_model(config: Mapping[str, Any], **kwargs: Any) -> SemanticEQModel:
    """Rebuild a :class:`SemanticEQModel` from its ``model_config`` (weights drawn afresh).

    Load the weights afterwards with ``model.load_state_dict(...)``. A config written
    before ``decoder_head`` replaced ``variant`` is read too (``"log1"`` means
    ``plugin_units``, ``"log2"`` ``normalised``); one written before ``variational``
    existed is a deterministic (tanh-latent) model. ``kwargs``: ``members``,
    ``member_heads``, ``seed`` or ``generators``; without either the initial weights
    are drawn from torch's global generator inside ``fork_rng``, leaving it untouched.
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
    unknown = sorted(set(values) - set(MODEL_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"unknown model config key(s) {unknown}; expected some of {list(MODEL_CONFIG_KEYS)}"
        )
    if "decoder_head" not in values:
        raise ValueError("model config lacks the field 'decoder_head'")
    own_draws = any(kwargs.get(key) is not None for key in ("seed", "generators", "flat"))
    with torch.random.fork_rng(devices=[], enabled=not own_draws):
        return SemanticEQModel(**values, **kwargs)
