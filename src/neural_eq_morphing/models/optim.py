"""Adam and ReduceLROnPlateau for stacked ensemble members, each member with its own LR.

:class:`BatchedAdam` reproduces the arithmetic of ``torch.optim.Adam`` (single-tensor
path, no weight decay, no AMSGrad) on one flat ``(M, P)`` parameter buffer, with a
learning rate per member row. :class:`PlateauScheduler` reproduces
``torch.optim.lr_scheduler.ReduceLROnPlateau`` in mode ``min`` with a relative
threshold, one independent state per member.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def fused_adam_available() -> bool:
    """Whether this torch build has the fused Adam kernel used by ``Adam(fused=True)``."""
    return hasattr(torch, "_fused_adam_")


class BatchedAdam:
    """Adam over a flat parameter buffer whose rows are independent members.

    The update of every element is the one ``torch.optim.Adam`` makes::

        m = lerp(m, g, 1 - beta1)
        v = beta2 · v + (1 - beta2) · g²
        p = p + (-lr / (1 - beta1^t)) · m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    with ``lr`` taken from the element's member row.

    Args:
        params: The flat parameters ``(M, P)``, updated in place; rows must be contiguous.
        lr: Initial learning rate, one for all members or one per member.
        betas: Adam's ``(beta1, beta2)``.
        eps: Adam's ``eps``.
        fused: ``True``: torch's fused kernel per member row, bit-identical to
            ``torch.optim.Adam(fused=True)`` (one pass over memory, ~2.5x faster here);
            ``False``: whole-buffer tensor operations, bit-identical to the default
            ``torch.optim.Adam``; ``None``: fused where available.
    """

    def __init__(
        self,
        params: Tensor,
        lr: float | Sequence[float] = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool | None = None,
    ) -> None:
        if params.ndim != 2 or not params.is_contiguous():
            raise ValueError(
                f"expected contiguous flat parameters of shape (M, P), got {tuple(params.shape)}"
            )
        if fused is None:
            fused = fused_adam_available()
        elif fused and not fused_adam_available():
            raise RuntimeError("this torch build has no fused Adam kernel (torch._fused_adam_)")
        self.fused = bool(fused)
        self._step_tensor = torch.zeros((), dtype=torch.float32)
        self.params = params
        self.exp_avg = torch.zeros_like(params)
        self.exp_avg_sq = torch.zeros_like(params)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.step_count = 0
        members = params.shape[0]
        lrs = [float(lr)] * members if isinstance(lr, int | float) else [float(v) for v in lr]
        if len(lrs) != members:
            raise ValueError(f"expected {members} learning rates, got {len(lrs)}")
        self.lrs = lrs

    def step(self, grad: Tensor) -> None:
        """Apply one Adam update with gradient ``grad`` (same shape as the parameters)."""
        self.step_count += 1
        if self.fused:
            self._fused_step(grad)
            return
        step = self.step_count
        self.exp_avg.lerp_(grad, 1 - self.beta1)
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias_correction1 = 1 - self.beta1**step
        bias_correction2_sqrt = (1 - self.beta2**step) ** 0.5
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
        neg_step = torch.tensor([[-lr / bias_correction1] for lr in self.lrs], dtype=torch.float32)
        self.params.addcdiv_(self.exp_avg * neg_step, denom)

    def _fused_step(self, grad: Tensor) -> None:
        self._step_tensor.add_(1)
        for k, lr in enumerate(self.lrs):
            torch._fused_adam_(
                [self.params[k]],
                [grad[k]],
                [self.exp_avg[k]],
                [self.exp_avg_sq[k]],
                [],
                [self._step_tensor],
                lr=lr,
                beta1=self.beta1,
                beta2=self.beta2,
                weight_decay=0.0,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )


class PlateauScheduler:
    """``ReduceLROnPlateau`` (mode ``min``, relative threshold) with one state per member.

    Args:
        members: Number of members.
        factor: Multiplier applied to a member's LR when it reduces.
        patience: Epochs without improvement tolerated before reducing.
        threshold: Relative improvement needed: better means ``loss < best · (1 - threshold)``.
        min_lr: Lower bound of the LR.
        cooldown: Epochs to wait after a reduction before counting bad epochs again.
        eps: A reduction smaller than this is ignored.
    """

    def __init__(
        self,
        members: int,
        *,
        factor: float = 0.5,
        patience: int = 20,
        threshold: float = 1e-4,
        min_lr: float = 0.0,
        cooldown: int = 0,
        eps: float = 1e-8,
    ) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        self.factor, self.patience, self.threshold = float(factor), int(patience), float(threshold)
        self.min_lr, self.cooldown, self.eps = float(min_lr), int(cooldown), float(eps)
        self.best = [math.inf] * members
        self.num_bad_epochs = [0] * members
        self.cooldown_counter = [0] * members

    def step(self, metrics: Sequence[float], lrs: Sequence[float]) -> list[float]:
        """Record one epoch's metric per member and return the members' new LRs."""
        if len(metrics) != len(self.best) or len(lrs) != len(self.best):
            raise ValueError(f"expected {len(self.best)} metrics and learning rates")
        new_lrs = []
        for k, (metric, lr) in enumerate(zip(metrics, lrs, strict=True)):
            current = float(metric)
            if current < self.best[k] * (1.0 - self.threshold):
                self.best[k] = current
                self.num_bad_epochs[k] = 0
            else:
                self.num_bad_epochs[k] += 1
            if self.cooldown_counter[k] > 0:
                self.cooldown_counter[k] -= 1
                self.num_bad_epochs[k] = 0
            new_lr = float(lr)
            if self.num_bad_epochs[k] > self.patience:
                reduced = max(new_lr * self.factor, self.min_lr)
                if new_lr - reduced > self.eps:
                    new_lr = reduced
                self.cooldown_counter[k] = self.cooldown
                self.num_bad_epochs[k] = 0
            new_lrs.append(new_lr)
        return new_lrs
