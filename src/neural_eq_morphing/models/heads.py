"""The decoder heads: the last linear layer's output ``o`` ``(..., 13)`` to a setting.

* ``"normalised"`` (Log 2): 13 sigmoid outputs in normalised space, always inside [0, 1];
* ``"plugin_units"`` (Log 1): outputs in plug-in units: gains ``12·tanh``, frequencies a
  sigmoid mapped linearly to the band's limits in Hz, Q ``9.9·sigmoid + 0.1``;
* ``"separate"`` (the heads the Log 1 diagnosis asked for): gains ``12·tanh``,
  frequencies a linear output read as ``log10(Hz)``, Q ``0.99·softplus + 0.1``, each
  expressed in the log + min-max space of Log 2's normaliser (plug-in limits, log10 on
  frequencies and Q) so that the loss compares like with like; in eval mode the output
  is clipped to [0, 1], the diagnosis's "hard clipping as the safety net"
  (:func:`separate_head`).

The first two are one affine sigmoid ``scale · sigmoid(slope · o) + shift`` per column:
``12·tanh(o) = 24·sigmoid(2·o) - 12`` exactly, so the gain columns use slope 2, scale
``max - min`` and shift ``min``; every other column uses slope 1. The normalised head is
the plain sigmoid. A new head is one function here and a name in :data:`DECODER_HEADS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

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
#: The heads whose output lies in Log 2's normalised space (they may share an ensemble).
NORMALISED_SPACE_HEADS: frozenset[str] = frozenset({"normalised", "separate"})
#: ``model_config["variant"]`` of files written before ``decoder_head`` replaced it.
LEGACY_VARIANT_HEADS: dict[str, str] = {"log1": "plugin_units", "log2": "normalised"}
#: Softplus scale and offset of the separate Q head: ``q = 0.99·softplus(o) + 0.1``.
SEPARATE_Q_SCALE = 0.99
SEPARATE_Q_OFFSET = 0.1


def check_decoder_head(decoder_head: str) -> DecoderHead:
    """Return ``decoder_head`` if it names a known head, else raise a ``ValueError``."""
    if decoder_head not in DECODER_HEADS:
        raise ValueError(
            f"unknown decoder_head {decoder_head!r}; expected one of {list(DECODER_HEADS)}"
        )
    return decoder_head  # type: ignore[return-value]


def same_output_space(heads: Sequence[str]) -> bool:
    """Whether decoder heads may share one ensemble: one head, or only normalised-space ones."""
    return len(set(heads)) <= 1 or set(heads) <= NORMALISED_SPACE_HEADS


@cache
def head_constants(decoder_head: DecoderHead) -> tuple[Tensor, Tensor, Tensor]:
    """The per-column ``(slope, scale, shift)`` of an affine-sigmoid head, float32 ``(13,)``.

    Raises:
        ValueError: For the ``separate`` head, which is no affine sigmoid.
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


def affine_sigmoid_head(output: Tensor, decoder_head: DecoderHead) -> Tensor:
    """``scale · sigmoid(slope · output) + shift`` per column (``normalised``, ``plugin_units``)."""
    if decoder_head == "normalised":
        return torch.sigmoid(output)
    slope, scale, shift = head_constants(decoder_head)
    return torch.addcmul(shift, torch.sigmoid(output * slope), scale)


@cache
def _separate_constants() -> tuple[Tensor, ...]:
    """Column order and log10 limits of the separate heads' frequency and Q columns."""
    columns = [indices_of_kind(kind) for kind in ("gain", "freq", "q")]  # type: ignore[arg-type]
    order = torch.argsort(torch.tensor([c for part in columns for c in part]))

    def log_limits(kind: str) -> tuple[Tensor, Tensor]:
        index = indices_of_kind(kind)  # type: ignore[arg-type]
        return (
            torch.tensor(np.log10(LOWER_LIMITS[index]), dtype=torch.float32),
            torch.tensor(np.log10(UPPER_LIMITS[index]), dtype=torch.float32),
        )

    return (*(torch.tensor(c) for c in columns), order, *log_limits("freq"), *log_limits("q"))


def separate_head(output: Tensor) -> Tensor:
    """The separate heads, in the log + min-max space of Log 2's normaliser (unclipped).

    Per column of the last linear layer's output ``o``:

    * gains: ``12·tanh(o)`` dB, i.e. ``(12·tanh(o) + 12) / 24 = sigmoid(2·o)``;
    * frequencies: ``o`` read as ``log10(Hz)``, i.e. ``(o - log10 f_min) / (log10 f_max -
      log10 f_min)`` with the band's plug-in limits (unbounded);
    * Q: ``q = 0.99·softplus(o) + 0.1`` (at least 0.1, unbounded above), i.e.
      ``(log10 q + 1) / 2``.
    """
    gains, freqs, qs, order, f_low, f_high, q_low, q_high = _separate_constants()
    q = F.softplus(output[..., qs]) * SEPARATE_Q_SCALE + SEPARATE_Q_OFFSET
    stacked = torch.cat(
        [
            torch.sigmoid(2.0 * output[..., gains]),
            (output[..., freqs] - f_low) / (f_high - f_low),
            (torch.log10(q) - q_low) / (q_high - q_low),
        ],
        dim=-1,
    )
    return stacked[..., order]


def decoder_output(output: Tensor, heads: Sequence[str], training: bool) -> Tensor:
    """The heads on the last linear output ``(M, ..., 13)``, member ``k`` with ``heads[k]``.

    Members with the separate heads are clipped to [0, 1] outside training (training keeps
    the gradient of out-of-range outputs). Only normalised-space heads may mix.
    """
    kinds = set(heads)
    if len(kinds) > 1 and not same_output_space(list(kinds)):
        raise ValueError(
            "only the normalised and separate heads (both in normalised space) may mix "
            f"in one ensemble, got {sorted(kinds)}"
        )
    if "separate" in kinds:
        separate = separate_head(output)
        if not training:
            separate = separate.clamp(0.0, 1.0)
        if kinds == {"separate"}:
            return separate
        chosen = torch.tensor([head == "separate" for head in heads])
        chosen = chosen.view(-1, *([1] * (output.ndim - 1)))
        return torch.where(chosen, separate, torch.sigmoid(output))
    return affine_sigmoid_head(output, heads[0])  # type: ignore[arg-type]
