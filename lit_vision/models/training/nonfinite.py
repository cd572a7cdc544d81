"""The guard against NaN/inf training losses (``model.nonfinite_loss``), kept apart from the module's steps.

``raise`` must not cost a host read per step (a GPU sync): the first non-finite loss is remembered on the
device and read only at the checks (every ``nonfinite_check_every_n_steps`` steps, before validation, before
every checkpoint write, at the end of training). ``skip`` reads the loss every step (one sync per step).
Under DDP every rank decides the same: the ones that carried on would wait forever in the next all-reduce.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["NonFiniteGuard", "where"]


def where(step: int, batch_idx: int, epoch: int) -> str:
    """How messages name a training step."""
    return f"global step {step} (epoch {epoch}, batch {batch_idx} of the epoch)"


class NonFiniteGuard:
    """The first non-finite training loss of a run: ``(global step, epoch, batch)``, on the loss's device
    (``-1`` while every loss was finite)."""

    def __init__(self) -> None:
        self.first: Tensor | None = None

    def watch(self, loss: Tensor, step: int, epoch: int, batch_idx: int) -> None:
        """Remember this loss if it is the first non-finite one: three tiny kernels, no host read."""
        if self.first is None or self.first.device != loss.device:
            self.first = torch.full((3,), -1, dtype=torch.long, device=loss.device)
        first = self.first
        fresh = ~torch.isfinite(loss.detach()) & (first[0] < 0)
        for i, value in enumerate((step, epoch, batch_idx)):  # Python ints go to the kernels as arguments
            first[i] = torch.where(fresh, value, first[i])

    def raise_if_seen(self, trainer: Any, noticed_at: int) -> None:
        """One host read of the record (all-reduced under DDP); raises if a loss was non-finite on any rank.
        The record stays: any later checkpoint write in this run raises too."""
        if self.first is None:
            return
        first = self.first
        if trainer is not None and trainer.world_size > 1:
            # max over the ranks' records: -1 where a rank saw none, else the latest of their first bad steps
            first = trainer.strategy.reduce(first.clone(), reduce_op="max")
        step, epoch, batch = (int(v) for v in first.tolist())
        if step < 0:
            return
        raise FloatingPointError(
            f"Non-finite training loss at {where(step, batch, epoch)} (noticed at global step {noticed_at}; "
            "model.nonfinite_check_every_n_steps sets how often the loss is read). Checkpoints written "
            "before this step are kept. Try a lower learning rate, gradient clipping "
            "(trainer.gradient_clip_val), 32-true precision, or model.nonfinite_loss=skip to step over such "
            "batches."
        )

    @staticmethod
    def loss_is_finite(loss: Tensor, trainer: Any) -> bool:
        """Whether ``loss`` is finite on every rank (one host read, and an all-reduce under DDP)."""
        finite = torch.isfinite(loss.detach()).float()
        if trainer is not None and trainer.world_size > 1:
            finite = trainer.strategy.reduce(finite, reduce_op="min")
        return bool(finite.item())
