"""Losses of the semantic EQ model (docs/design.md section 5), as differentiable torch functions.

These are the reference definitions; the batched trainer in
:mod:`neural_eq_morphing.models.batched` computes the same quantities with hand-written
gradients, and the tests check the two against each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from neural_eq_morphing.models.modules import DecoderHead, check_decoder_head

#: Logit put on the diagonal of the similarity matrix so that ``exp`` of it is exactly 0
#: in float32 (similarities divided by a temperature of 0.1 lie in [-10, 10]).
SELF_LOGIT = -1.0e4
#: ``eps`` of the L2 normalisation (that of ``torch.nn.functional.normalize``).
NORMALISE_EPS = 1e-12


def supervised_contrastive_loss(
    projections: Tensor, labels: Tensor, temperature: float = 0.1
) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, ``L_out``) of a batch.

    For each anchor ``i`` with at least one positive (another row with the same label),
    ``loss_i = -1/|P(i)| · Σ_{p ∈ P(i)} log( exp(s_ip) / Σ_{a ≠ i} exp(s_ia) )`` where
    ``s = z zᵀ / temperature`` and ``z`` are the L2-normalised projections. The loss is
    the mean of ``loss_i`` over the anchors that have a positive; anchors without one
    are skipped, and a batch without any such anchor has loss 0.

    Args:
        projections: Shape ``(..., batch, dim)``; leading dimensions are independent
            batches (e.g. ensemble members).
        labels: Integer class ids of shape ``(..., batch)`` (broadcastable to the
            leading dimensions of ``projections``).
        temperature: Softmax temperature.

    Returns:
        The loss, of shape ``projections.shape[:-2]`` (a scalar for one batch).
    """
    if projections.ndim < 2:
        raise ValueError(
            f"projections need shape (..., batch, dim), got {tuple(projections.shape)}"
        )
    z = F.normalize(projections, dim=-1, eps=NORMALISE_EPS)
    batch = z.shape[-2]
    eye = torch.eye(batch, dtype=torch.bool, device=z.device)
    logits = (z @ z.transpose(-1, -2)) / temperature
    logits = logits.masked_fill(eye, SELF_LOGIT)
    log_prob = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    positives = (labels.unsqueeze(-1) == labels.unsqueeze(-2)) & ~eye
    n_positives = positives.sum(-1)
    anchor_loss = -(log_prob * positives).sum(-1) / n_positives.clamp_min(1)
    has_positive = n_positives > 0
    n_anchors = has_positive.sum(-1).clamp_min(1)
    return (anchor_loss * has_positive).sum(-1) / n_anchors


def reconstruction_loss(
    reconstruction: Tensor,
    target: Tensor,
    decoder_head: DecoderHead,
    *,
    consistent_units: bool = False,
    zscore_mean: Tensor | None = None,
    zscore_std: Tensor | None = None,
) -> Tensor:
    """Mean squared reconstruction error of one batch (mean over rows and columns).

    * ``"normalised"`` head (Log 2) and ``"separate"`` heads: MSE between the decoder
      output and the target, both in normalised space.
    * ``"plugin_units"`` head, ``consistent_units=False`` (Log 1, the original, failed
      design, reproduced on purpose): MSE between the decoder output in plug-in units
      (dB, Hz, Q) and the z-scored target — a units mismatch.
    * ``"plugin_units"`` head, ``consistent_units=True`` (the ablation): the decoder
      output is z-scored with ``zscore_mean`` / ``zscore_std`` before the MSE.

    Args:
        reconstruction: Decoder output, shape ``(..., batch, 13)``.
        target: Normalised target features, same shape.
        decoder_head: ``"plugin_units"``, ``"normalised"`` or ``"separate"``.
        consistent_units: See above; ``plugin_units`` heads only (the normalised head is
            consistent already; asking for it there is an error).
        zscore_mean: Column means of the z-score normaliser, shape ``(13,)``.
        zscore_std: Column standard deviations of the z-score normaliser, shape ``(13,)``.

    Returns:
        The loss, of shape ``reconstruction.shape[:-2]``.
    """
    check_decoder_head(decoder_head)
    if consistent_units:
        if decoder_head != "plugin_units":
            raise ValueError("consistent_units applies to the plugin_units decoder head only")
        if zscore_mean is None or zscore_std is None:
            raise ValueError("consistent units need the z-score mean and std of the normaliser")
        reconstruction = (reconstruction - zscore_mean) / zscore_std
    return (reconstruction - target).square().mean(dim=(-2, -1))


def kl_divergence(mean: Tensor, log_variance: Tensor) -> Tensor:
    """KL divergence of the diagonal Gaussian posteriors from the standard normal prior.

    ``KL_i = ½ Σ_d (μ_id² + exp(log_var_id) - log_var_id - 1)`` per row, averaged over the
    rows of each batch.

    Args:
        mean: Posterior means ``(..., batch, latent_dim)``.
        log_variance: Posterior log-variances, same shape.

    Returns:
        The mean KL per batch, of shape ``mean.shape[:-2]``.
    """
    per_row = 0.5 * (mean.square() + log_variance.exp() - log_variance - 1.0).sum(-1)
    return per_row.mean(-1)
