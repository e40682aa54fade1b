"""The losses of the semantic EQ model (docs/design.md section 5), each defined once.

Every loss works on ``M`` members at once (leading dims ``(M, B)``) and takes an
optional row mask ``valid`` ``(M, B)`` for batches padded to a common size: a padded row
then contributes exactly nothing, so each member's loss is that of its own rows alone (to
float round-off). Gradients come from autograd. :class:`Objective` combines them into a
design's training objective ``reconstruction + w · contrastive (+ β · KL)``.

A new loss is one function here and a weight in the design's block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from neural_eq_morphing.models.network import Forward
from neural_eq_morphing.models.perceptual import perceptual_loss_per_row

#: Logit put on the diagonal of the similarity matrix (and on padded columns) so that
#: ``exp`` of it is exactly 0 in float32 (similarities over a temperature of 0.1 lie in
#: [-10, 10]).
SELF_LOGIT = -1.0e4
#: ``eps`` of the L2 normalisation (that of ``torch.nn.functional.normalize``).
NORMALISE_EPS = 1e-12


def masked_mean(values: Tensor, valid: Tensor | None) -> Tensor:
    """Mean over the last dim of ``values`` ``(..., B)``, over the valid rows only.

    A batch without valid rows gets 0.
    """
    if valid is None:
        return values.mean(-1)
    weights = valid.to(values.dtype)
    return (values * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)


def supervised_contrastive_loss(
    projections: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    valid: Tensor | None = None,
) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, ``L_out``) of independent batches.

    For each anchor ``i`` with at least one positive (another valid row with the same
    label), ``loss_i = -1/|P(i)| · Σ_{p ∈ P(i)} log( exp(s_ip) / Σ_{a ≠ i} exp(s_ia) )``
    with ``s = z zᵀ / temperature`` and ``z`` the L2-normalised projections. The loss is
    the mean of ``loss_i`` over the anchors that have a positive; a batch without any has
    loss 0.

    Args:
        projections: ``(..., B, D)``; leading dims are independent batches (members).
        labels: Integer class ids ``(..., B)`` or ``(B,)``.
        temperature: Softmax temperature.
        valid: Optional row mask ``(..., B)``: a padded row is no anchor, no positive and
            gets :data:`SELF_LOGIT` in every row's softmax. Padded rows must be finite.

    Returns:
        The loss per batch, ``projections.shape[:-2]``.
    """
    if projections.ndim < 2:
        raise ValueError(
            f"projections need shape (..., batch, dim), got {tuple(projections.shape)}"
        )
    z = F.normalize(projections, dim=-1, eps=NORMALISE_EPS)
    batch, lead = z.shape[-2], z.shape[:-2]
    excluded = _eye(batch)
    if valid is not None:
        excluded = excluded | ~valid.unsqueeze(-2)
    # The label masks are constants (no gradient): each anchor's positives weighted by
    # 1 / (|P(i)| · anchors with a positive), so the loss is one weighted sum.
    positives = (labels.unsqueeze(-1) == labels.unsqueeze(-2)) & ~excluded
    if valid is not None:
        positives = positives & valid.unsqueeze(-1)
    positives = positives.to(z.dtype)
    n_positives = positives.sum(-1, keepdim=True)
    has_positive = (n_positives > 0).to(z.dtype)
    anchors = has_positive.sum(-2, keepdim=True).clamp_min(1.0)
    weights = positives * (has_positive / n_positives.clamp_min(1.0) / anchors)
    # Similarities over the temperature, with SELF_LOGIT added where excluded: one op.
    bias = excluded.to(z.dtype) * SELF_LOGIT
    flat = z.reshape(-1, batch, z.shape[-1])
    logits = torch.baddbmm(
        bias.expand(*lead, batch, batch).reshape(-1, batch, batch),
        flat,
        flat.transpose(-1, -2),
        alpha=1.0 / temperature,
    ).view(*lead, batch, batch)
    log_prob = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    return -(log_prob * weights).sum((-2, -1))


_EYES: dict[int, Tensor] = {}


def _eye(batch: int) -> Tensor:
    """The ``(batch, batch)`` boolean identity (cached: a step needs it every time)."""
    eye = _EYES.get(batch)
    if eye is None:
        eye = torch.eye(batch, dtype=torch.bool)
        if len(_EYES) < 64:
            _EYES[batch] = eye
    return eye


def reconstruction_per_row(
    output: Tensor, target: Tensor, zscore: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Squared reconstruction error of each row, mean over the 13 columns: ``(..., B)``.

    * normalised and separate heads (Log 2): decoder output and target both in
      normalised space;
    * ``plugin_units`` head without ``zscore`` (Log 1, the original failed design,
      reproduced on purpose): the output in plug-in units (dB, Hz, Q) against the
      z-scored target, a units mismatch;
    * ``plugin_units`` with ``zscore`` ``(mean, std)`` (the ablation): the output
      z-scored first, consistent units.
    """
    if zscore is not None:
        output = (output - zscore[0]) / zscore[1]
    return (output - target).square().mean(-1)


def kl_per_row(mean: Tensor, log_variance: Tensor) -> Tensor:
    """KL divergence of diagonal Gaussian posteriors from N(0, I), per row ``(..., B)``.

    ``KL_i = ½ Σ_d (μ_id² + exp(log_var_id) - log_var_id - 1)``.
    """
    return 0.5 * (mean.square() + log_variance.exp() - log_variance - 1.0).sum(-1)


class StepLosses(NamedTuple):
    """Per-member loss components, each ``(M,)``; ``kl`` is 0 for deterministic models."""

    reconstruction: Tensor
    contrastive: Tensor
    kl: Tensor


@dataclass(frozen=True)
class Objective:
    """A design's training objective for the ``M`` members of one ensemble.

    Attributes:
        temperature: Temperature of the contrastive loss.
        zscore: The consistent-units loss's z-score ``(mean, std)``, each ``(13,)`` or
            one per member ``(M, 1, 13)``; ``None``: no z-scoring of the output.
        perceptual_weight: Per member ``(M,)``, the weight of the perceptual loss added
            to the reconstruction error (0: none).
    """

    temperature: float
    zscore: tuple[Tensor, Tensor] | None
    perceptual_weight: Tensor
    #: The members whose perceptual weight is above 0 (read every step).
    perceptual_members: Tensor = field(init=False)

    def __post_init__(self) -> None:
        members = torch.nonzero(self.perceptual_weight > 0).flatten()
        object.__setattr__(self, "perceptual_members", members)

    @classmethod
    def of(
        cls,
        temperature: float,
        members: int,
        zscore: tuple[Tensor, Tensor] | None = None,
        perceptual_weight: float | Sequence[float] = 0.0,
    ) -> Objective:
        """Build, with ``perceptual_weight`` one number or one per member (each ≥ 0)."""
        weights = torch.as_tensor(perceptual_weight, dtype=torch.float32).reshape(-1)
        if weights.numel() == 1:
            weights = weights.expand(members)
        if weights.numel() != members or bool((weights < 0).any()):
            raise ValueError(
                f"perceptual_weight must be one number or {members}, each at least 0, "
                f"got {perceptual_weight}"
            )
        return cls(float(temperature), zscore, weights.contiguous())

    def reconstruction_rows(self, output: Tensor, target: Tensor) -> Tensor:
        """Reconstruction loss of each row ``(M, B)``: the MSE plus the weighted perceptual loss."""
        per_row = reconstruction_per_row(output, target, self.zscore)
        chosen = self.perceptual_members
        if len(chosen):  # only the members that have the loss pay for it
            extra = perceptual_loss_per_row(output[chosen], target[chosen])
            per_row = per_row.index_add(0, chosen, extra * self.perceptual_weight[chosen, None])
        return per_row

    def losses(
        self, fwd: Forward, target: Tensor, labels: Tensor, valid: Tensor | None = None
    ) -> StepLosses:
        """The loss components of one batch per member, over its valid rows."""
        recon = masked_mean(self.reconstruction_rows(fwd.output, target), valid)
        contrastive = supervised_contrastive_loss(fwd.projection, labels, self.temperature, valid)
        if fwd.posterior is None:
            kl = torch.zeros_like(recon)
        else:
            kl = masked_mean(kl_per_row(*fwd.posterior), valid)
        return StepLosses(recon, contrastive, kl)
