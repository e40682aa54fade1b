"""M semantic EQ models stacked into one batched implementation with hand-written gradients.

This is the training path of :func:`~neural_eq_morphing.models.training.train` and the
reason for the project's training speed. At this model size the time of an eager training
step goes to per-operation overhead, not arithmetic (docs/design.md section 9); this
module keeps that overhead low:

* the parameters of ``M`` members live in one flat float32 buffer of shape ``(M, P)``
  (row ``k`` is member ``k``, :attr:`BatchedSemanticEQ.flat`), seen through
  per-parameter views of shape ``(M, *shape)``; the gradients live in a buffer of the
  same layout (:attr:`BatchedSemanticEQ.grad`);
* every linear layer is a batched matmul over the member dimension
  (``torch.baddbmm``), and a residual block's first linear layer and its skip share
  their input, so they are one matmul to ``2·out`` columns;
* LayerNorm runs without affine (``torch.native_layer_norm``) followed by the stacked
  gamma and beta;
* forward and backward are written out by hand (no autograd graph) and
  :meth:`BatchedSemanticEQ.loss_and_grad` writes the gradients straight into the
  gradient buffer, overwriting it. One exception: for the ``separate`` heads and the
  perceptual loss, autograd differentiates the output stage (head and reconstruction
  loss on the ``(M, B, 13)`` head output) and the hand-written backward takes its
  gradient through the network (:meth:`BatchedSemanticEQ._output_stage_grad`).

The optimiser is not here: :func:`~neural_eq_morphing.models.training.train` gives each
member a ``torch.optim.Adam`` over its row of :attr:`~BatchedSemanticEQ.flat`, whose
``.grad`` is the matching row of :attr:`~BatchedSemanticEQ.grad`.

Members may train on rows of their own
(:func:`~neural_eq_morphing.models.training.train_members`): then a step's batches can
differ in size between members. They are padded to the largest, and a row mask
``valid`` ``(M, B)`` (:meth:`BatchedSemanticEQ.loss_and_grad`,
:func:`batched_contrastive`, :meth:`BatchedSemanticEQ.evaluate_members`) makes the padded
rows contribute exactly nothing: each member's losses and gradients are those of its own
rows alone, up to float round-off. Likewise the z-score vectors of the consistent-units
loss may be one pair per member.

The maths is that of :class:`~neural_eq_morphing.models.modules.SemanticEQModel` with
the losses of :mod:`neural_eq_morphing.models.losses`; the tests check values and
gradients against autograd on the module. :meth:`BatchedSemanticEQ.from_models` and
:meth:`BatchedSemanticEQ.export` copy parameters between the two forms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from neural_eq_morphing.models.losses import NORMALISE_EPS, SELF_LOGIT
from neural_eq_morphing.models.modules import (
    LAYER_NORM_EPS,
    SemanticEQModel,
    build_model,
    check_decoder_head,
    head_constants,
    separate_head,
)
from neural_eq_morphing.models.perceptual import perceptual_loss_per_row

_layer_norm_backward = torch.ops.aten.native_layer_norm_backward.default
_threshold_backward = torch.ops.aten.threshold_backward.default
_tanh_backward = torch.ops.aten.tanh_backward.default
_sigmoid_backward = torch.ops.aten.sigmoid_backward.default
_LN_MASK = [True, False, False]


@dataclass(frozen=True)
class _Piece:
    """One tensor of the module's ``state_dict`` inside a batched parameter.

    Weights (2-D) are stored transposed, ``(in, out)``; vectors as one row ``(1, n)``.
    Several pieces side by side along the columns make up one batched parameter.
    """

    key: str
    columns: int
    is_weight: bool


@dataclass(frozen=True)
class ParameterEntry:
    """One batched parameter: its name, per-member shape, offset in a member's row."""

    name: str
    shape: tuple[int, int]
    offset: int
    pieces: tuple[_Piece, ...]

    @property
    def numel(self) -> int:
        """Number of values per member."""
        return self.shape[0] * self.shape[1]


class ParameterLayout:
    """Where each parameter of a :class:`SemanticEQModel` sits in a member's flat row.

    Per residual block ``b`` (prefix ``encoder.blocks.j`` or ``decoder.blocks.j``):
    ``w_in`` ``(in, 2·out)`` = ``[linear1.weightᵀ | skip.weightᵀ]``, ``b_in`` ``(1, 2·out)``,
    ``gamma1``/``beta1`` (``norm1``), ``w2``/``b2`` (``linear2``), ``gamma2``/``beta2``
    (``norm2``). Each plain linear layer (``encoder.hidden``, ``encoder.to_latent``,
    ``projection``, ``decoder.head``) has ``w`` ``(in, out)`` and ``b`` ``(1, out)``.

    Args:
        model_config: A :attr:`SemanticEQModel.model_config` dict.
    """

    def __init__(self, model_config: Mapping[str, Any]) -> None:
        self.model_config = dict(model_config)
        n_features = int(model_config["n_features"])
        hidden = [int(d) for d in model_config["hidden_dims"]]
        latent = int(model_config["latent_dim"])
        projection = int(model_config["projection_dim"])
        self.entries: list[ParameterEntry] = []
        self._offset = 0
        self.encoder_widths = self._blocks("encoder", n_features, hidden)
        self._linear("encoder.hidden", hidden[-1], hidden[-1])
        # A variational encoder gives the posterior's mean and log-variance side by side.
        latent_out = latent * (2 if model_config.get("variational", False) else 1)
        self._linear("encoder.to_latent", hidden[-1], latent_out)
        self._linear("projection", latent, projection)
        self.decoder_widths = self._blocks("decoder", latent, hidden)
        self._linear("decoder.head", hidden[-1], n_features)
        self.size = self._offset
        self.by_name = {entry.name: entry for entry in self.entries}

    def _add(self, name: str, shape: tuple[int, int], pieces: Sequence[_Piece]) -> None:
        self.entries.append(ParameterEntry(name, shape, self._offset, tuple(pieces)))
        self._offset += shape[0] * shape[1]

    def _linear(self, name: str, n_in: int, n_out: int) -> None:
        self._add(f"{name}.w", (n_in, n_out), [_Piece(f"{name}.weight", n_out, True)])
        self._add(f"{name}.b", (1, n_out), [_Piece(f"{name}.bias", n_out, False)])

    def _blocks(self, stack: str, n_in: int, widths: Sequence[int]) -> list[tuple[int, int]]:
        dims = [n_in, *widths]
        for j in range(len(widths)):
            i, o = dims[j], dims[j + 1]
            p = f"{stack}.blocks.{j}"
            self._add(
                f"{p}.w_in",
                (i, 2 * o),
                [_Piece(f"{p}.linear1.weight", o, True), _Piece(f"{p}.skip.weight", o, True)],
            )
            self._add(
                f"{p}.b_in",
                (1, 2 * o),
                [_Piece(f"{p}.linear1.bias", o, False), _Piece(f"{p}.skip.bias", o, False)],
            )
            self._add(f"{p}.gamma1", (1, o), [_Piece(f"{p}.norm1.weight", o, False)])
            self._add(f"{p}.beta1", (1, o), [_Piece(f"{p}.norm1.bias", o, False)])
            self._add(f"{p}.w2", (o, o), [_Piece(f"{p}.linear2.weight", o, True)])
            self._add(f"{p}.b2", (1, o), [_Piece(f"{p}.linear2.bias", o, False)])
            self._add(f"{p}.gamma2", (1, o), [_Piece(f"{p}.norm2.weight", o, False)])
            self._add(f"{p}.beta2", (1, o), [_Piece(f"{p}.norm2.bias", o, False)])
        return [(dims[j], dims[j + 1]) for j in range(len(widths))]

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """Return per-parameter views ``(M, *shape)`` into a flat ``(M, size)`` buffer."""
        if flat.ndim != 2 or flat.shape[1] != self.size:
            raise ValueError(
                f"expected a flat buffer of shape (M, {self.size}), got {tuple(flat.shape)}"
            )
        members = flat.shape[0]
        return {
            e.name: flat[:, e.offset : e.offset + e.numel].view(members, *e.shape)
            for e in self.entries
        }

    def pack(self, state: Mapping[str, Tensor]) -> Tensor:
        """Flatten one module ``state_dict`` into a row of ``size`` values."""
        parts = []
        for entry in self.entries:
            blocks = [
                state[piece.key].detach().t()
                if piece.is_weight
                else state[piece.key].detach()[None]
                for piece in entry.pieces
            ]
            parts.append(torch.cat(blocks, dim=1).reshape(-1))
        return torch.cat(parts).to(torch.float32)

    def unpack(self, row: Tensor) -> dict[str, Tensor]:
        """Turn one member's row back into ``state_dict`` tensors (copies)."""
        state: dict[str, Tensor] = {}
        for entry in self.entries:
            value = row[entry.offset : entry.offset + entry.numel].view(entry.shape)
            start = 0
            for piece in entry.pieces:
                block = value[:, start : start + piece.columns]
                start += piece.columns
                state[piece.key] = (block.t() if piece.is_weight else block[0]).clone()
        return state


class _Block(NamedTuple):
    """Views of one residual block's parameters (or gradients), each ``(M, ...)``."""

    w_in: Tensor
    b_in: Tensor
    gamma1: Tensor
    beta1: Tensor
    w2: Tensor
    b2: Tensor
    gamma2: Tensor
    beta2: Tensor


class _Net(NamedTuple):
    """Views of all parameters (or gradients) grouped for the forward/backward code."""

    encoder: list[_Block]
    hidden_w: Tensor
    hidden_b: Tensor
    latent_w: Tensor
    latent_b: Tensor
    projection_w: Tensor
    projection_b: Tensor
    decoder: list[_Block]
    head_w: Tensor
    head_b: Tensor


def _group(layout: ParameterLayout, flat: Tensor) -> _Net:
    v = layout.views(flat)

    def blocks(stack: str, n: int) -> list[_Block]:
        return [
            _Block(*(v[f"{stack}.blocks.{j}.{field}"] for field in _Block._fields))
            for j in range(n)
        ]

    return _Net(
        encoder=blocks("encoder", len(layout.encoder_widths)),
        hidden_w=v["encoder.hidden.w"],
        hidden_b=v["encoder.hidden.b"],
        latent_w=v["encoder.to_latent.w"],
        latent_b=v["encoder.to_latent.b"],
        projection_w=v["projection.w"],
        projection_b=v["projection.b"],
        decoder=blocks("decoder", len(layout.decoder_widths)),
        head_w=v["decoder.head.w"],
        head_b=v["decoder.head.b"],
    )


def _block_forward(x: Tensor, p: _Block, mask: Tensor | None) -> tuple[Tensor, tuple]:
    """One residual block on ``x`` ``(M, B, in)``; ``mask`` is the scaled dropout mask."""
    out = p.gamma1.shape[-1]
    h = torch.baddbmm(p.b_in, x, p.w_in)
    a, s = h[..., :out], h[..., out:]
    n1, mu1, rs1 = torch.native_layer_norm(a, [out], None, None, LAYER_NORM_EPS)
    r = torch.addcmul(p.beta1, n1, p.gamma1).relu_()
    if mask is not None:
        r.mul_(mask)
    z = torch.baddbmm(p.b2, r, p.w2)
    n2, mu2, rs2 = torch.native_layer_norm(z, [out], None, None, LAYER_NORM_EPS)
    y = torch.addcmul(p.beta2, n2, p.gamma2).add_(s)
    return y, (x, a, n1, mu1, rs1, r, z, n2, mu2, rs2)


def _block_backward(
    dy: Tensor, p: _Block, g: _Block, cache: tuple, mask: Tensor | None, *, need_dx: bool
) -> Tensor | None:
    """Backward of :func:`_block_forward`: writes the block's gradients into ``g``."""
    x, a, n1, mu1, rs1, r, z, n2, mu2, rs2 = cache
    out = p.gamma1.shape[-1]
    torch.sum(dy * n2, dim=1, keepdim=True, out=g.gamma2)
    torch.sum(dy, dim=1, keepdim=True, out=g.beta2)
    dz = _layer_norm_backward(dy * p.gamma2, z, [out], mu2, rs2, None, None, _LN_MASK)[0]
    torch.bmm(r.transpose(1, 2), dz, out=g.w2)
    torch.sum(dz, dim=1, keepdim=True, out=g.b2)
    dr = torch.bmm(dz, p.w2.transpose(1, 2))
    if mask is not None:
        dr.mul_(mask)
    dy1 = _threshold_backward(dr, r, 0)
    torch.sum(dy1 * n1, dim=1, keepdim=True, out=g.gamma1)
    torch.sum(dy1, dim=1, keepdim=True, out=g.beta1)
    da = _layer_norm_backward(dy1 * p.gamma1, a, [out], mu1, rs1, None, None, _LN_MASK)[0]
    dh = torch.cat([da, dy], dim=-1)
    torch.bmm(x.transpose(1, 2), dh, out=g.w_in)
    torch.sum(dh, dim=1, keepdim=True, out=g.b_in)
    return torch.bmm(dh, p.w_in.transpose(1, 2)) if need_dx else None


_SELF_LOGITS: dict[tuple[int, torch.dtype], Tensor] = {}


def _self_logits(batch: int, dtype: torch.dtype) -> Tensor:
    """A ``(batch, batch)`` matrix with :data:`SELF_LOGIT` on the diagonal, 0 elsewhere."""
    cached = _SELF_LOGITS.get((batch, dtype))
    if cached is None:
        cached = torch.diag(torch.full((batch,), SELF_LOGIT, dtype=dtype))
        if len(_SELF_LOGITS) < 64:
            _SELF_LOGITS[batch, dtype] = cached
    return cached


class _Contrastive(NamedTuple):
    loss: Tensor
    d_projection: Tensor | None


def batched_contrastive(
    projection: Tensor,
    labels: Tensor,
    temperature: float,
    weight: float | Tensor | None = None,
    valid: Tensor | None = None,
) -> _Contrastive:
    """Supervised contrastive loss of ``G`` independent batches, with its gradient.

    Same definition as
    :func:`~neural_eq_morphing.models.losses.supervised_contrastive_loss`.

    Args:
        projection: Shape ``(G, B, D)``, unnormalised projections.
        labels: Shape ``(G, B)`` or ``(B,)``, integer class ids.
        temperature: Softmax temperature.
        weight: When given (a number, or one per batch shaped ``(G, 1, 1)``), also
            return ``d(weight · loss_g) / d projection`` for every
            batch ``g``.
        valid: Optional row mask ``(G, B)`` (bool) of batches padded to a common size:
            a padded row is no anchor and no positive, and its column gets
            :data:`~neural_eq_morphing.models.losses.SELF_LOGIT` added, whose ``exp`` is
            exactly 0 in float32. Batch ``g``'s loss is then that of its valid rows
            alone (to float round-off) and the gradient is exactly 0 on padded rows.
            Padded rows must hold finite values. ``None``: every row is valid.

    Returns:
        The loss per batch ``(G,)`` and the gradient ``(G, B, D)`` (or ``None``).
    """
    groups, batch = projection.shape[0], projection.shape[1]
    if labels.ndim == 1:
        labels = labels.expand(groups, batch)
    norm = torch.linalg.vector_norm(projection, dim=-1, keepdim=True).clamp_min_(NORMALISE_EPS)
    z = projection / norm
    self_logit = _self_logits(batch, projection.dtype)
    if valid is not None:
        padded = torch.zeros(valid.shape, dtype=projection.dtype).masked_fill_(~valid, SELF_LOGIT)
        self_logit = self_logit + padded.unsqueeze(1)
    logits = torch.baddbmm(self_logit, z, z.transpose(1, 2), alpha=1.0 / temperature)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    positives = labels.unsqueeze(-1) == labels.unsqueeze(-2)
    positives.diagonal(dim1=-2, dim2=-1).fill_(False)
    if valid is not None:
        positives &= valid.unsqueeze(-1) & valid.unsqueeze(-2)
    positives = positives.to(projection.dtype)
    n_pos = positives.sum(-1, keepdim=True)
    has_pos = (n_pos > 0).to(projection.dtype)
    inv_pos = has_pos / n_pos.clamp_min(1.0)
    n_anchors = has_pos.sum(1, keepdim=True).clamp_min_(1.0)
    anchor_loss = lse - (positives * logits).sum(-1, keepdim=True) * inv_pos
    loss = (anchor_loss * has_pos).sum(dim=(1, 2)) / n_anchors.view(-1)
    if weight is None:
        return _Contrastive(loss, None)
    # d loss / d logits_ik = has_i / N · (softmax_ik - pos_ik / |P(i)|); logits = z zᵀ / T.
    coef = has_pos * (weight / temperature) / n_anchors
    grad_logits = (logits - lse).exp_().sub_(positives * inv_pos).mul_(coef)
    dz = torch.bmm(grad_logits + grad_logits.transpose(1, 2), z)
    radial = (z * dz).sum(-1, keepdim=True)
    d_projection = dz.sub_(z * radial).div_(norm)
    return _Contrastive(loss, d_projection)


class _Trace(NamedTuple):
    """What the forward pass keeps for the backward pass."""

    latent: Tensor  # what the decoder and the projection see (z of a variational model)
    projection: Tensor
    output: Tensor
    caches: list[tuple]  # one per residual block, encoder then decoder
    masks: list[Tensor | None]  # dropout mask per residual block
    hidden_in: Tensor  # input of encoder.hidden
    hidden: Tensor  # ReLU output of encoder.hidden
    head_in: Tensor  # input of decoder.head
    head_out: Tensor  # output of decoder.head's linear layer
    activated: Tensor  # sigmoid output of an affine-sigmoid head
    posterior: tuple[Tensor, Tensor] | None  # (mean, log-variance) of a variational model


class StepLosses(NamedTuple):
    """Per-member loss components of one batch, each of shape ``(M,)``.

    ``kl`` is the KL divergence of a variational model's posteriors (0 otherwise).
    """

    reconstruction: Tensor
    contrastive: Tensor
    kl: Tensor


class BatchedSemanticEQ:
    """``M`` :class:`SemanticEQModel` members trained as one batched model.

    Args:
        model_config: The members' :attr:`SemanticEQModel.model_config`.
        flat: Parameters, shape ``(M, layout.size)``; see :class:`ParameterLayout`.
        temperature: Temperature of the contrastive loss.
        zscore_mean: For the consistent-units loss: column means ``(13,)`` shared by all
            members, or one row per member ``(M, 13)`` or ``(M, 1, 13)``.
        zscore_std: For the consistent-units loss: column stds, shaped as
            ``zscore_mean``.
        recon_in_consistent_units: ``plugin_units`` heads only: z-score the decoder
            output before the MSE (otherwise the original units mismatch is kept; see
            :func:`~neural_eq_morphing.models.losses.reconstruction_loss`).
        perceptual_weight: Weight of the perceptual loss
            (:func:`~neural_eq_morphing.models.perceptual.perceptual_loss`) added to the
            reconstruction MSE; 0 for none. One number, or one per member.
        member_heads: Each member's decoder head, when they differ: the ``normalised``
            and ``separate`` heads (both in normalised space, with the same parameters)
            may share one ensemble. ``None``: every member has ``model_config``'s.

    Gradients: everything is written out by hand except, for the ``separate`` head or a
    perceptual loss, the output stage (head and reconstruction loss): there autograd
    gives the gradient at the head's linear output, which the hand-written backward then
    takes through the rest of the network (:meth:`_output_stage_grad`). A variational
    latent's sampling and KL term are hand-written.
    """

    def __init__(
        self,
        model_config: Mapping[str, Any],
        flat: Tensor,
        *,
        temperature: float = 0.1,
        zscore_mean: Tensor | None = None,
        zscore_std: Tensor | None = None,
        recon_in_consistent_units: bool = False,
        perceptual_weight: float | Sequence[float] = 0.0,
        member_heads: Sequence[str] | None = None,
    ) -> None:
        self.layout = ParameterLayout(model_config)
        self.model_config = dict(model_config)
        self.decoder_head = check_decoder_head(self.model_config["decoder_head"])
        self.flat = flat.detach().to(torch.float32).contiguous()
        self.grad = torch.zeros_like(self.flat)
        self.params = _group(self.layout, self.flat)
        self.grads = _group(self.layout, self.grad)
        self.temperature = float(temperature)
        self.dropout = float(self.model_config.get("dropout", 0.0))
        self.dropout_widths = [o for _, o in self.layout.encoder_widths] + [
            o for _, o in self.layout.decoder_widths
        ]
        self.variational = bool(self.model_config.get("variational", False))
        self.latent_dim = int(self.model_config["latent_dim"])
        self.member_heads = self._member_heads(member_heads)
        weights = torch.as_tensor(perceptual_weight, dtype=torch.float32).reshape(-1)
        if weights.numel() == 1:
            weights = weights.expand(self.members)
        if weights.numel() != self.members or bool((weights < 0).any()):
            raise ValueError(
                f"perceptual_weight must be one number or {self.members}, each at least 0, "
                f"got {perceptual_weight}"
            )
        if weights.any() and self.decoder_head == "plugin_units":
            raise ValueError("the perceptual loss needs a decoder output in normalised space")
        #: Per member, the perceptual loss's weight; the members that have one.
        self.perceptual_weight = weights.contiguous()
        self._perceptual_members = torch.nonzero(weights > 0).flatten()
        separate = torch.tensor([head == "separate" for head in self.member_heads])
        #: ``(M, 1, 1)``: which members have the separate heads (``None``: none do).
        self._separate = separate.view(-1, 1, 1) if separate.any() else None
        #: Head and loss differentiated by autograd (the separate head, a perceptual loss).
        self.autograd_output = self._separate is not None or len(self._perceptual_members) > 0
        slope, scale, shift = head_constants(
            "normalised" if self.decoder_head == "separate" else self.decoder_head
        )
        self._plain_sigmoid = self.decoder_head in ("normalised", "separate")
        self._head = (slope, scale, shift)
        self._zscore: tuple[Tensor, Tensor] | None = None
        if recon_in_consistent_units:
            if self.decoder_head != "plugin_units":
                raise ValueError(
                    "recon_in_consistent_units applies to the plugin_units decoder head only"
                )
            if zscore_mean is None or zscore_std is None:
                raise ValueError(
                    "recon_in_consistent_units needs the z-score mean and std of the normaliser"
                )
            self._zscore = (
                self._zscore_vectors(zscore_mean, "zscore_mean"),
                self._zscore_vectors(zscore_std, "zscore_std"),
            )

    def _member_heads(self, heads: Sequence[str] | None) -> list[str]:
        """Each member's head (checked: only heads in normalised space may mix)."""
        if heads is None:
            return [self.decoder_head] * self.members
        heads = [check_decoder_head(head) for head in heads]
        if len(heads) != self.members:
            raise ValueError(f"member_heads needs {self.members} heads, got {len(heads)}")
        if len(set(heads)) > 1 and not set(heads) <= {"normalised", "separate"}:
            raise ValueError(
                "only the normalised and separate heads (both in normalised space) may mix "
                f"in one ensemble, got {sorted(set(heads))}"
            )
        return heads

    def _head_output(self, pre: Tensor, training: bool) -> tuple[Tensor, Tensor]:
        """The heads on the last linear output: ``(output, activated)``.

        ``activated`` is the affine-sigmoid heads' sigmoid (for the hand-written
        backward). Members with the separate heads get :func:`separate_head`, clipped to
        [0, 1] in eval mode.
        """
        if self._plain_sigmoid:
            activated = output = torch.sigmoid(pre)
        else:
            slope, scale, shift = self._head
            activated = torch.sigmoid(pre * slope)
            output = torch.addcmul(shift, activated, scale)
        if self._separate is not None:
            separate = separate_head(pre)
            if not training:
                separate = separate.clamp(0.0, 1.0)
            output = torch.where(self._separate, separate, output)
        return output, activated

    def _zscore_vectors(self, values: Any, name: str) -> Tensor:
        """``(13,)`` shared by all members, or ``(M, 1, 13)``: one vector per member."""
        tensor = torch.as_tensor(values, dtype=torch.float32)
        n_features = int(self.model_config["n_features"])
        if tensor.ndim <= 1:
            if tensor.numel() != n_features:
                raise ValueError(
                    f"{name} must hold {n_features} values, got shape {tuple(tensor.shape)}"
                )
            return tensor.reshape(-1)
        if tensor.numel() != self.members * n_features or tensor.shape[0] != self.members:
            raise ValueError(
                f"{name} must have shape ({n_features},), ({self.members}, {n_features}) or "
                f"({self.members}, 1, {n_features}), got {tuple(tensor.shape)}"
            )
        return tensor.reshape(self.members, 1, n_features).contiguous()

    @property
    def members(self) -> int:
        """Number of stacked members ``M``."""
        return self.flat.shape[0]

    @property
    def dropout_width(self) -> int:
        """Number of dropout units per row, over all residual blocks."""
        return sum(self.dropout_widths)

    @classmethod
    def from_models(cls, models: Sequence[SemanticEQModel], **kwargs: Any) -> BatchedSemanticEQ:
        """Stack the parameters of ``models`` into one batch.

        They share one ``model_config``, except that the ``normalised`` and ``separate``
        heads may mix (``member_heads``).
        """
        if not models:
            raise ValueError("need at least one model to stack")
        config = models[0].model_config
        heads = [m.model_config["decoder_head"] for m in models]
        if any({**m.model_config, "decoder_head": heads[0]} != config for m in models):
            raise ValueError("all stacked models must share one model_config")
        layout = ParameterLayout(config)
        flat = torch.stack([layout.pack(m.state_dict()) for m in models])
        return cls(config, flat, member_heads=heads, **kwargs)

    def member_config(self, member: int) -> dict[str, Any]:
        """The ``model_config`` of member ``member`` (its own decoder head)."""
        return {**self.model_config, "decoder_head": self.member_heads[member]}

    def export(self, member: int) -> SemanticEQModel:
        """Return member ``member`` as a standalone :class:`SemanticEQModel` in eval mode."""
        with torch.random.fork_rng(devices=[]):  # the throw-away init must not use the RNG
            model = build_model(self.member_config(member))
        model.load_state_dict(self.layout.unpack(self.flat[member]))
        return model.eval()

    def load_member(self, member: int, model: SemanticEQModel) -> None:
        """Overwrite member ``member`` with the parameters of ``model``."""
        if model.model_config != self.member_config(member):
            raise ValueError("the model's config differs from the member's model_config")
        self.flat[member].copy_(self.layout.pack(model.state_dict()))

    # ------------------------------------------------------------------ forward
    def _split_masks(self, masks: Tensor | None) -> list[Tensor | None]:
        if masks is None:
            return [None] * len(self.dropout_widths)
        views: list[Tensor | None] = []
        start = 0
        for width in self.dropout_widths:
            views.append(masks[..., start : start + width])
            start += width
        return views

    def _forward(
        self, x: Tensor, masks: Tensor | None, noise: Tensor | None = None, training: bool = False
    ) -> _Trace:
        """Forward pass; ``noise`` ``(M, B, latent_dim)`` samples a variational latent."""
        p = self.params
        mask_views = self._split_masks(masks)
        n_enc = len(p.encoder)
        caches: list[tuple] = []
        h = x
        for block, mask in zip(p.encoder, mask_views[:n_enc], strict=True):
            h, cache = _block_forward(h, block, mask)
            caches.append(cache)
        hidden_in = h
        hidden = torch.baddbmm(p.hidden_b, hidden_in, p.hidden_w).relu_()
        posterior = None
        if self.variational:
            out = torch.baddbmm(p.latent_b, hidden, p.latent_w)
            mean, log_variance = out[..., : self.latent_dim], out[..., self.latent_dim :]
            posterior = (mean, log_variance)
            latent = mean
            if noise is not None:
                latent = torch.addcmul(mean, log_variance.mul(0.5).exp_(), noise)
        else:
            latent = torch.baddbmm(p.latent_b, hidden, p.latent_w).tanh_()
        projection = torch.baddbmm(p.projection_b, latent, p.projection_w)
        h = latent
        for block, mask in zip(p.decoder, mask_views[n_enc:], strict=True):
            h, cache = _block_forward(h, block, mask)
            caches.append(cache)
        pre = torch.baddbmm(p.head_b, h, p.head_w)
        output, activated = self._head_output(pre, training)
        return _Trace(
            latent,
            projection,
            output,
            caches,
            mask_views,
            hidden_in,
            hidden,
            h,
            pre,
            activated,
            posterior,
        )

    def forward(
        self, x: Tensor, masks: Tensor | None = None, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Batched forward pass (no gradients).

        Args:
            x: Features ``(M, B, 13)`` (or ``(B, 13)``, shared by all members).
            masks: Scaled dropout masks ``(M, B, dropout_width)`` for training mode, or
                ``None`` for eval mode.
            noise: Standard normal draws ``(M, B, latent_dim)`` that sample a variational
                latent (training mode); ``None``: the posterior mean.

        Returns:
            ``(latent, projection, reconstruction)``, each with leading dims ``(M, B)``.
        """
        if x.ndim == 2:
            x = x.expand(self.members, *x.shape)
        training = masks is not None or noise is not None
        trace = self._forward(x, masks, noise, training)
        return trace.latent, trace.projection, trace.output

    def _reconstruction(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        if self._zscore is None:
            diff = output - target
        else:
            mean, std = self._zscore
            diff = (output - mean).div_(std).sub_(target)
        return diff.square().mean(dim=(1, 2)), diff

    def _masked_reconstruction(
        self, output: Tensor, target: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Per-member MSE over the valid rows, and its gradient w.r.t. the ``output``."""
        if self._zscore is None:
            diff = output - target
        else:
            mean, std = self._zscore
            diff = (output - mean).div_(std).sub_(target)
        diff.mul_(valid.unsqueeze(-1))
        # 1 / (valid rows · 13) per member; a member without valid rows gets 0.
        rows = valid.sum(1, dtype=diff.dtype)
        scale = rows.mul_(diff.shape[-1]).clamp_min_(1.0).reciprocal_().view(-1, 1, 1)
        recon = diff.square().sum(dim=(1, 2)).mul_(scale.view(-1))
        return recon, diff.mul_(scale * 2.0)

    def _per_row_reconstruction(self, output: Tensor, target: Tensor) -> Tensor:
        """Reconstruction loss of each row, ``(M, N)``.

        The MSE over the 13 columns (of the z-scored output with consistent units), plus
        the weighted perceptual loss.
        """
        if self._zscore is not None:
            output = (output - self._zscore[0]) / self._zscore[1]
        per_row = (output - target).square().mean(-1)
        chosen = self._perceptual_members
        if len(chosen):  # only the members that have the loss pay for it
            extra = perceptual_loss_per_row(output[chosen], target[chosen])
            per_row = per_row.index_add(0, chosen, extra * self.perceptual_weight[chosen, None])
        return per_row

    def _affine_sigmoid_stage_grad(
        self, trace: _Trace, target: Tensor, valid: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Reconstruction MSE per member and its gradient at the head output, by hand."""
        if valid is None:
            recon, diff = self._reconstruction(trace.output, target)
            d_out = diff.mul_(2.0 / (target.shape[1] * diff.shape[-1]))
        else:
            recon, d_out = self._masked_reconstruction(trace.output, target, valid)
        if self._zscore is not None:
            d_out = d_out.div_(self._zscore[1])
        if self._plain_sigmoid:
            return recon, _sigmoid_backward(d_out, trace.activated)
        slope, scale, _ = self._head
        return recon, _sigmoid_backward(d_out * scale, trace.activated).mul_(slope)

    def _output_stage_grad(
        self, head_out: Tensor, target: Tensor, valid: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Reconstruction loss per member and its gradient at ``head_out``, by autograd.

        The head (training mode: the separate head unclipped) and
        :meth:`_per_row_reconstruction` on the linear output ``head_out`` ``(M, B, 13)``;
        each member's loss is the mean over its valid rows.
        """
        # The training loop runs in inference mode; autograd needs ordinary tensors.
        with torch.inference_mode(False), torch.enable_grad():
            pre = head_out.clone().requires_grad_(True)
            target = target.clone()
            output, _ = self._head_output(pre, training=True)
            per_row = self._per_row_reconstruction(output, target)
            if valid is None:
                recon = per_row.mean(-1)
            else:
                weights = valid.clone().to(per_row.dtype)
                recon = (per_row * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)
            (d_pre,) = torch.autograd.grad(recon.sum(), pre)
        return recon.detach(), d_pre

    def _kl(self, trace: _Trace, valid: Tensor | None) -> Tensor:
        """Per-row KL divergence ``(M, B)`` of a variational trace's posteriors."""
        if trace.posterior is None:
            return torch.zeros(trace.latent.shape[:2])
        mean, log_variance = trace.posterior
        per_row = (mean.square() + log_variance.exp() - log_variance - 1.0).sum(-1).mul_(0.5)
        return per_row if valid is None else per_row.mul_(valid)

    # ----------------------------------------------------------------- training
    def loss_and_grad(
        self,
        x: Tensor,
        labels: Tensor,
        masks: Tensor | None,
        contrastive_weight: float | Tensor,
        valid: Tensor | None = None,
        *,
        noise: Tensor | None = None,
        kl_weight: float = 0.0,
    ) -> StepLosses:
        """Forward and backward of ``reconstruction + weight · contrastive (+ β · KL)``.

        Fills :attr:`grad` (overwriting it) with the gradient of every member's loss.

        Args:
            x: Features ``(M, B, 13)``; they are also the reconstruction target.
            labels: Class ids ``(M, B)``.
            masks: Scaled dropout masks ``(M, B, dropout_width)`` or ``None``.
            contrastive_weight: Weight of the contrastive term: one number, or one per
                member shaped ``(M, 1, 1)``.
            valid: Optional row mask ``(M, B)`` (bool) when the members' batches were
                padded to a common size ``B``: member ``k``'s losses and gradient are
                then those of its valid rows alone (to float round-off; the padded rows
                contribute exactly nothing, but must hold finite values). A member
                without valid rows gets losses 0 and a zero gradient. ``None``: every
                row is valid.
            noise: A variational model's standard normal draws ``(M, B, latent_dim)``:
                the decoder sees ``z = μ + sigma · noise``. Required for such a model.
            kl_weight: β, the weight of the KL term (variational models).

        Returns:
            The unweighted loss components per member.
        """
        p, g = self.params, self.grads
        batch = x.shape[1]
        if self.variational and noise is None:
            raise ValueError("a variational model's training step needs its noise draws")
        trace = self._forward(x, masks, noise if self.variational else None, training=True)
        n_enc = len(p.encoder)

        # Reconstruction: the output stage by autograd, or MSE through the affine sigmoid.
        if self.autograd_output:
            recon, d_pre = self._output_stage_grad(trace.head_out, x, valid)
        else:
            recon, d_pre = self._affine_sigmoid_stage_grad(trace, x, valid)
        torch.bmm(trace.head_in.transpose(1, 2), d_pre, out=g.head_w)
        torch.sum(d_pre, dim=1, keepdim=True, out=g.head_b)
        dh = torch.bmm(d_pre, p.head_w.transpose(1, 2))
        for j in reversed(range(len(p.decoder))):
            k = n_enc + j
            dh = _block_backward(
                dh, p.decoder[j], g.decoder[j], trace.caches[k], trace.masks[k], need_dx=True
            )

        # Contrastive: through the projection; both paths meet at the latent.
        contrastive = batched_contrastive(
            trace.projection, labels, self.temperature, contrastive_weight, valid
        )
        d_proj = contrastive.d_projection
        if d_proj is None:  # pragma: no cover - always set when a weight is given
            raise RuntimeError("contrastive gradient missing")
        torch.bmm(trace.latent.transpose(1, 2), d_proj, out=g.projection_w)
        torch.sum(d_proj, dim=1, keepdim=True, out=g.projection_b)
        d_latent = torch.baddbmm(dh, d_proj, p.projection_w.transpose(1, 2))

        # Latent: tanh, or a variational model's sampling and KL term; then the encoder
        # tail (Linear -> ReLU -> Linear) and blocks.
        kl_rows = self._kl(trace, valid)
        if trace.posterior is None:
            d_latent_pre = _tanh_backward(d_latent, trace.latent)
        else:
            d_latent_pre = self._posterior_backward(d_latent, trace, noise, valid, kl_weight)
        torch.bmm(trace.hidden.transpose(1, 2), d_latent_pre, out=g.latent_w)
        torch.sum(d_latent_pre, dim=1, keepdim=True, out=g.latent_b)
        d_hidden = _threshold_backward(
            torch.bmm(d_latent_pre, p.latent_w.transpose(1, 2)), trace.hidden, 0
        )
        torch.bmm(trace.hidden_in.transpose(1, 2), d_hidden, out=g.hidden_w)
        torch.sum(d_hidden, dim=1, keepdim=True, out=g.hidden_b)
        dh = torch.bmm(d_hidden, p.hidden_w.transpose(1, 2))
        for j in reversed(range(n_enc)):
            dh = _block_backward(
                dh, p.encoder[j], g.encoder[j], trace.caches[j], trace.masks[j], need_dx=j > 0
            )
        rows = batch if valid is None else valid.sum(1).clamp_min(1)
        return StepLosses(recon, contrastive.loss, kl_rows.sum(1) / rows)

    def _posterior_backward(
        self,
        d_latent: Tensor,
        trace: _Trace,
        noise: Tensor | None,
        valid: Tensor | None,
        kl_weight: float,
    ) -> Tensor:
        """Gradient at ``to_latent``'s output ``[μ | log_var]`` of a variational model.

        ``z = μ + exp(log_var / 2) · ε`` passes ``dz`` to ``μ`` and ``dz · ε · sigma / 2`` to
        ``log_var``; the KL term (mean over the member's rows, weight β) adds
        ``β μ / n`` and ``β (sigma² - 1) / (2n)``.
        """
        if trace.posterior is None or noise is None:  # pragma: no cover - checked by callers
            raise RuntimeError("the posterior backward needs a variational trace and its noise")
        mean, log_variance = trace.posterior
        sigma = log_variance.mul(0.5).exp_()
        d_log_variance = d_latent * noise * sigma * 0.5
        d_mean = d_latent
        if kl_weight:
            if valid is None:
                coef = torch.full((mean.shape[0], 1, 1), kl_weight / mean.shape[1])
            else:
                rows = valid.sum(1, dtype=mean.dtype).clamp_min_(1.0)
                coef = (kl_weight / rows).view(-1, 1, 1) * valid.unsqueeze(-1)
            d_mean = d_mean + coef * mean
            d_log_variance += coef * 0.5 * (sigma * sigma - 1.0)
        return torch.cat([d_mean, d_log_variance], dim=-1)

    @torch.no_grad()
    def evaluate(self, x: Tensor, labels: Tensor, batch_size: int) -> StepLosses:
        """Eval-mode losses over consecutive batches of ``batch_size`` rows.

        Each loss is the unweighted mean of its per-batch values (as a loop over a
        non-shuffled ``DataLoader`` would report); the last batch may be smaller.

        Args:
            x: Features ``(n, 13)`` shared by all members.
            labels: Class ids ``(n,)``.
            batch_size: Rows per batch.

        Returns:
            Per-member loss components, each ``(M,)``.
        """
        members, n = self.members, x.shape[0]
        target = x.expand(members, *x.shape)
        trace = self._forward(target, None)
        projection = trace.projection
        # Reconstruction and KL per row, side by side: (M, n, 2).
        per_row = torch.stack(
            [self._per_row_reconstruction(trace.output, target), self._kl(trace, None)], -1
        )
        full, rest = divmod(n, batch_size)
        recon_parts, contrastive_parts = [], []
        if full:
            rows = full * batch_size
            recon_parts.append(per_row[:, :rows].reshape(members, full, batch_size, 2).mean(2))
            proj = projection[:, :rows].reshape(members * full, batch_size, -1)
            lab = labels[:rows].reshape(full, batch_size).repeat(members, 1)
            loss = batched_contrastive(proj, lab, self.temperature).loss
            contrastive_parts.append(loss.view(members, full))
        if rest:
            recon_parts.append(per_row[:, n - rest :].mean(1, keepdim=True))
            loss = batched_contrastive(
                projection[:, n - rest :], labels[n - rest :], self.temperature
            ).loss
            contrastive_parts.append(loss.view(members, 1))
        recon, kl = torch.cat(recon_parts, dim=1).mean(1).unbind(-1)
        return StepLosses(recon, torch.cat(contrastive_parts, dim=1).mean(1), kl)

    @torch.no_grad()
    def evaluate_members(
        self, x: Tensor, labels: Tensor, counts: Sequence[int], batch_size: int
    ) -> StepLosses:
        """Eval-mode losses of members with rows of their own, in one batched pass.

        Member ``k`` is evaluated on its first ``counts[k]`` rows in consecutive batches
        of ``batch_size`` rows (its last batch may be smaller); each loss is the mean of
        its per-batch values, as :meth:`evaluate` computes for rows shared by all members
        (equal to float round-off). Rows past a member's count are padding and do not
        count.

        Args:
            x: Features ``(M, N, 13)``, member ``k``'s rows first, then padding (finite).
            labels: Class ids ``(M, N)``.
            counts: Rows of each member, each in ``[1, N]``.
            batch_size: Rows per batch.

        Returns:
            Per-member loss components, each ``(M,)``.
        """
        members, n = x.shape[0], x.shape[1]
        if len(counts) != members or not all(1 <= c <= n for c in counts):
            raise ValueError(f"counts must be {members} values in [1, {n}], got {list(counts)}")
        trace = self._forward(x, None)
        # Reconstruction and KL per row, side by side: (M, N, 2).
        per_row = torch.stack(
            [self._per_row_reconstruction(trace.output, x), self._kl(trace, None)], -1
        )
        batches = -(-n // batch_size)
        pad = batches * batch_size - n
        projection = torch.nn.functional.pad(trace.projection, (0, 0, 0, pad))
        per_row = torch.nn.functional.pad(per_row, (0, 0, 0, pad))
        labels = torch.nn.functional.pad(labels, (0, pad))
        valid = torch.arange(batches * batch_size) < torch.tensor(counts).unsqueeze(1)
        valid = valid.view(members, batches, batch_size)
        rows = valid.sum(-1)
        sums = per_row.view(members, batches, batch_size, 2).mul_(valid.unsqueeze(-1)).sum(2)
        means = sums / rows.clamp_min(1).unsqueeze(-1)
        contrastive = batched_contrastive(
            projection.view(members * batches, batch_size, -1),
            labels.view(members * batches, batch_size),
            self.temperature,
            valid=valid.view(members * batches, batch_size),
        ).loss.view(members, batches)
        used = rows > 0
        n_batches = used.sum(1)
        recon, kl = (means.mul_(used.unsqueeze(-1)).sum(1) / n_batches.unsqueeze(-1)).unbind(-1)
        return StepLosses(recon, contrastive.mul_(used).sum(1) / n_batches, kl)
