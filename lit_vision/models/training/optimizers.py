"""Optimizers with hyperparameters in decoupled, batch-size-independent units.

:class:`DecoupledSGD` is airbench's parameterisation (Jordan 2024, arXiv:2404.00498, after Page's "How to
train your ResNet" series): learning rate and weight decay are given per 1024 examples and independent of
the momentum, so each can be tuned without re-tuning the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch.optim import SGD

__all__ = ["DecoupledSGD"]


class DecoupledSGD(SGD):
    """Nesterov SGD whose ``lr`` and ``weight_decay`` are per 1024 examples and momentum-independent.

    For a batch of ``B`` examples (the loss averaged over them) and momentum ``m``, with
    ``k = 1 + 1 / (1 - m)`` (how much momentum amplifies a constant gradient), this is
    ``torch.optim.SGD`` with::

        lr_torch = lr * B / (1024 * k)          # the step per example: lr / (1024 * k), whatever B and m
        weight_decay_torch = weight_decay / lr  # each step shrinks weights by weight_decay * B / (1024 * k)

    The decay per step does not depend on ``lr``; an LR schedule scales both together. Per-group ``lr`` and
    ``weight_decay`` given in parameter groups are converted the same way.

    Args:
        params: parameters or parameter groups.
        lr: learning rate per 1024 examples.
        momentum: momentum.
        weight_decay: weight decay per 1024 examples, decoupled from the learning rate.
        batch_size: examples per optimizer step over all devices; left unset (``None``), the model fills it
            in from the run (per-device batch x devices x gradient accumulation).
        nesterov: Nesterov momentum.
        fused: ``torch.optim.SGD``'s fused implementation (one kernel for every tensor); ``None``: torch's
            default (foreach on CUDA).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 11.5,
        momentum: float = 0.85,
        weight_decay: float = 0.0153,
        batch_size: int | None = None,
        nesterov: bool = True,
        fused: bool | None = None,
    ) -> None:
        if batch_size is None or batch_size < 1:
            raise ValueError(
                f"DecoupledSGD needs batch_size >= 1 (examples per optimizer step), got {batch_size}; "
                "ImageClassifier fills it in when the config leaves it unset."
            )
        if not 0.0 <= momentum < 1.0 or lr <= 0:
            raise ValueError(f"DecoupledSGD needs 0 <= momentum < 1 and lr > 0, got {momentum}, {lr}")
        self.batch_size = batch_size
        kilostep = 1024 * (1 + 1 / (1 - momentum))

        def torch_units(group_lr: float, group_wd: float) -> dict[str, float]:
            return {"lr": group_lr * batch_size / kilostep, "weight_decay": group_wd / group_lr}

        params = list(params)
        if params and isinstance(params[0], dict):
            params = [
                {**g, **torch_units(g.get("lr", lr), g.get("weight_decay", weight_decay))} for g in params
            ]
        defaults = torch_units(lr, weight_decay)
        super().__init__(params, momentum=momentum, nesterov=nesterov, fused=fused, **defaults)
