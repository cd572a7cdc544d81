"""The model's parameters in optimizer groups, and the optimizer built over them.

No weight decay on normalization weights and biases by default (decaying them only shrinks the scale
BatchNorm learns); airbench's ``bias_scaler``: normalization biases at ``norm_bias_lr_scale`` x the LR with
their decay divided by it, so the decay per step stays the same (Jordan 2024, arXiv:2404.00498).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lit_vision.errors import ConfigError
from lit_vision.models.training.factory_args import left_unset

__all__ = ["build_optimizer", "check_learning_rates", "parameter_groups"]


def parameter_groups(
    module: nn.Module, decay_all: bool = False, norm_bias_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """Trainable parameters of ``module`` split into a decayed group and a no-decay group (norm weights,
    biases: every parameter of fewer than 2 dimensions), and with ``norm_bias_lr_scale != 1`` a last group
    of normalization biases carrying ``lr_scale``. ``decay_all``: one decayed group for everything."""
    scale = norm_bias_lr_scale
    scaled = set()
    if scale != 1.0:
        norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
        scaled = {id(m.bias) for m in module.modules() if isinstance(m, norms) and m.bias is not None}
    decay, no_decay, norm_bias = [], [], []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        if id(p) in scaled:
            norm_bias.append(p)
        else:
            (decay if decay_all or p.ndim > 1 else no_decay).append(p)
    groups: list[dict[str, Any]] = [{"params": decay}]
    if not decay_all:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if norm_bias:
        groups.append(
            {"params": norm_bias, "lr_scale": scale, **({} if decay_all else {"weight_decay": 0.0})}
        )
    return groups


def build_optimizer(
    factory: Callable[..., torch.optim.Optimizer], groups: list[dict[str, Any]], batch_size: int | None = None
) -> torch.optim.Optimizer:
    """``factory`` over ``groups`` with each group's ``lr_scale`` applied (the same decay per step, lr x
    weight_decay, at scale x the LR); ``batch_size`` (examples per optimizer step) goes to an optimizer that
    takes one its config left unset (``lit_vision.models.DecoupledSGD``)."""
    takes_batch = left_unset(factory, "batch_size")
    optimizer = factory(groups, **({"batch_size": batch_size} if takes_batch else {}))
    for group in optimizer.param_groups:
        scale = group.get("lr_scale", 1.0)
        if scale != 1.0:
            group["lr"] *= scale
            group["weight_decay"] = group.get("weight_decay", 0.0) / scale
    return optimizer


def check_learning_rates(optimizer: Any, scheduler: Any) -> None:
    """A zero or negative learning rate (or OneCycleLR ``max_lr``) refused when the model is built: torch's
    optimizers check ``lr`` only when they are built, after the data is loaded, and a scheduler's peak
    never."""
    for option, factory, name in (
        ("model.optimizer", optimizer, "lr"),
        ("model.scheduler", scheduler, "max_lr"),
    ):
        value = (getattr(factory, "keywords", None) or {}).get(name) if factory is not None else None
        values = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, int | float) and not v > 0 for v in values):
            raise ConfigError(
                f"--{option}.init_args.{name} {value}: a learning rate must be > 0 (e.g. 0.1 for SGD, 1e-3 "
                "for AdamW); to freeze the weights, use `validate`/`test` instead of fit."
            )
