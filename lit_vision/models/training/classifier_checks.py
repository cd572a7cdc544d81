"""What ``ImageClassifier`` refuses: option values when it is built, and a checkpoint of another architecture.

The option checks run when the CLI builds the model, before any data is read; each raises a ``ConfigError``
(one ``error:`` line naming the option as the user writes it, ``--model.nonfinite_loss``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from lit_vision.errors import ConfigError
from lit_vision.models.training.param_groups import check_learning_rates
from lit_vision.models.zoo.registry import create_backbone

__all__ = ["build_backbone", "check_arguments", "check_same_architecture"]


def check_arguments(args: Mapping[str, Any]) -> None:
    """Refuse ``ImageClassifier``'s option values that cannot be meant; ``args``: its arguments by name
    (``locals()`` at the start of ``__init__``). The checks are written ``not (ok)`` so that a NaN is refused
    too."""
    if args["nonfinite_loss"] not in ("raise", "skip", "ignore"):
        raise ConfigError(
            f"--model.nonfinite_loss must be raise, skip or ignore, got {args['nonfinite_loss']!r}."
        )
    if not args["nonfinite_check_every_n_steps"] >= 1:
        raise ConfigError(
            "--model.nonfinite_check_every_n_steps must be >= 1, "
            f"got {args['nonfinite_check_every_n_steps']}."
        )
    if args["on_schedule_change"] not in ("refuse", "extend", "restart"):
        raise ConfigError(
            "--model.on_schedule_change must be refuse, extend or restart, "
            f"got {args['on_schedule_change']!r}."
        )
    check_learning_rates(args["optimizer"], args["scheduler"])
    if not args["norm_bias_lr_scale"] > 0:
        raise ConfigError(f"--model.norm_bias_lr_scale must be > 0, got {args['norm_bias_lr_scale']}.")
    if args["scheduler_interval"] not in ("step", "epoch"):
        raise ConfigError(
            f"--model.scheduler_interval must be step or epoch, got {args['scheduler_interval']!r}."
        )
    class_names, num_classes = args["class_names"], args["num_classes"]
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"{len(class_names)} class names for num_classes={num_classes}.")


def build_backbone(
    backbone: str | nn.Module, num_classes: int, backbone_kwargs: dict[str, Any] | None
) -> nn.Module:
    """``backbone`` itself when it is a module, else the registered backbone of that name; an argument of
    ``backbone_kwargs`` its constructor does not take is refused with the option's name."""
    if isinstance(backbone, nn.Module):
        return backbone
    try:
        return create_backbone(backbone, num_classes=num_classes, **(backbone_kwargs or {}))
    except TypeError as err:  # an argument the backbone's constructor does not take
        raise ConfigError(f"--model.backbone_kwargs {backbone_kwargs} for {backbone}: {err}") from err


def check_same_architecture(hparams: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
    """Refuse a checkpoint of another architecture with a message, not a page of missing keys.

    ``hparams``: the model's hyperparameters; ``saved``: the checkpoint's (``hyper_parameters``). Only a named
    backbone is compared: a module given by ``class_path`` is not recorded in the hyperparameters.
    """
    mine = {k: hparams.get(k) for k in ("backbone", "num_classes", "backbone_kwargs")}
    theirs = {k: saved.get(k) for k in mine}
    if isinstance(mine["backbone"], str) and any(
        k in saved and theirs[k] != mine[k] for k in ("backbone", "num_classes")
    ):
        raise ConfigError(
            f"The checkpoint was trained with backbone={theirs['backbone']!r}, "
            f"num_classes={theirs['num_classes']} (backbone_kwargs={theirs['backbone_kwargs']}); this "
            f"run builds backbone={mine['backbone']!r}, num_classes={mine['num_classes']}. Use the "
            "config the checkpoint was trained with (its run directory holds config.yaml), or, to train "
            "it on other classes, load it as pretrained weights instead of --ckpt_path."
        )
