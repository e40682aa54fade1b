"""The optimiser of an ensemble: ``torch.optim.Adam`` and ``ReduceLROnPlateau`` per member.

Each member gets the step and the LR schedule it would get alone, with the public torch
classes, so their arithmetic is torch's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from neural_eq_morphing.models.config import TrainingConfig


class MemberAdam:
    """Adam and ReduceLROnPlateau for the members of one batched ensemble, each its own.

    One ``torch.optim.Adam`` holds every member's row of the flat ``(M, P)`` parameter
    buffer as a parameter of its own (its ``.grad`` is the matching row of the gradient
    buffer, which the training step overwrites in place), so each member has its own Adam
    state. Members whose learning rates are equal share a
    parameter group: a step is one fused kernel call per distinct learning rate (one
    until a schedule reduces), not one per member. Adam's arithmetic is elementwise, so
    this is bit-identical to one ``torch.optim.Adam`` per member.

    A member's learning rate lives in its own ``torch.optim.Optimizer`` over its row
    (:attr:`members`, never stepped): its ``ReduceLROnPlateau`` acts on that, and
    :meth:`end_epoch` regroups Adam's parameter groups after the schedules stepped.

    A member whose epoch is over sits out a step (:meth:`step`'s ``active``).

    Args:
        config: ``betas``, ``eps``, ``fused_adam``, and for every member without its
            own config ``learning_rate`` and the schedule (``lr_schedule``,
            ``lr_factor``, ``lr_patience``, ``lr_threshold``).
        flat: The members' parameters ``(M, P)``, a plain tensor (the rows are views of
            it, updated in place).
        grad: The gradient buffer, same shape.
        configs: Each member's own config (its learning rate and schedule), or ``None``:
            ``config`` for all.
    """

    def __init__(
        self,
        config: TrainingConfig,
        flat: Tensor,
        grad: Tensor,
        configs: Sequence[TrainingConfig] | None = None,
    ) -> None:
        if flat.requires_grad or flat.shape != grad.shape:
            raise ValueError(
                "MemberAdam needs a flat parameter buffer without autograd and a gradient "
                f"buffer of its shape, got {tuple(flat.shape)} and {tuple(grad.shape)}"
            )
        members = flat.shape[0]
        configs = list(configs) if configs is not None else [config] * members
        self.rows = [flat[k] for k in range(members)]
        for row, row_grad in zip(self.rows, grad, strict=True):
            row.grad = row_grad
        kernel = {"fused": True} if config.fused_adam else {"foreach": False}
        self.adam = torch.optim.Adam(
            self.rows, lr=config.learning_rate, betas=config.betas, eps=config.eps, **kernel
        )
        self.members = [
            torch.optim.Optimizer([row], {"lr": own.learning_rate})
            for row, own in zip(self.rows, configs, strict=True)
        ]
        #: Member index -> its plateau schedule (members without a schedule have none).
        self.schedulers = {
            k: torch.optim.lr_scheduler.ReduceLROnPlateau(
                member,
                mode="min",
                factor=own.lr_factor,
                patience=own.lr_patience,
                threshold=own.lr_threshold,
            )
            for k, (member, own) in enumerate(zip(self.members, configs, strict=True))
            if own.lr_schedule
        }
        self._regroup()  # members may start with learning rates of their own

    @property
    def learning_rates(self) -> list[float]:
        """The members' current learning rates."""
        return [float(member.param_groups[0]["lr"]) for member in self.members]

    def step(self, active: Sequence[bool] | None = None) -> None:
        """One Adam step of the members with the gradient now in ``the gradient buffer``.

        Args:
            active: Which members step (one flag per member); ``None``: all. An inactive
                member's row has its ``.grad`` set to ``None`` for the step, so
                ``torch.optim.Adam`` leaves its weights, moments and step count alone
                (as if it had not been called for that member).
        """
        if active is None or all(active):
            self.adam.step()
            return
        if len(active) != len(self.rows):
            raise ValueError(f"need {len(self.rows)} flags, got {len(active)}")
        idle = [row for row, on in zip(self.rows, active, strict=True) if not on]
        grads = [row.grad for row in idle]
        for row in idle:
            row.grad = None
        try:
            self.adam.step()
        finally:
            for row, grad in zip(idle, grads, strict=True):
                row.grad = grad

    def end_epoch(self, val_losses: Sequence[float]) -> None:
        """Step every member's schedule on its validation loss (if there is a schedule)."""
        for k, scheduler in self.schedulers.items():
            scheduler.step(val_losses[k])
        self._regroup()

    def _regroup(self) -> None:
        """One Adam parameter group per distinct member learning rate."""
        lrs = self.learning_rates
        grouped = {id(p): group["lr"] for group in self.adam.param_groups for p in group["params"]}
        if all(grouped[id(row)] == lr for row, lr in zip(self.rows, lrs, strict=True)):
            return
        settings = {k: v for k, v in self.adam.param_groups[0].items() if k not in ("params", "lr")}
        cohorts: dict[float, list[Tensor]] = {}
        for row, lr in zip(self.rows, lrs, strict=True):
            cohorts.setdefault(lr, []).append(row)
        # Adam's state is keyed by the parameter tensors, so it survives the regrouping.
        self.adam.param_groups.clear()
        for lr, rows in cohorts.items():
            self.adam.add_param_group({**settings, "params": rows, "lr": lr})
