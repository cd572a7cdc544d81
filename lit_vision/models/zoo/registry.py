"""Backbone registry in the style of timm's model registry.

Backbones are registered by name with :func:`register_backbone` and built with :func:`create_backbone`.
Besides the registered zoo, two prefixes reach other libraries:

* ``torchvision/<name>``: any classification model of ``torchvision.models`` (head replaced for
  ``num_classes``),
* ``timm/<name>``: any ``timm`` model (needs the ``[timm]`` extra).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from lit_vision.errors import ConfigError

__all__ = [
    "create_backbone",
    "list_backbones",
    "register_backbone",
    "register_variant",
]

BackboneFn = TypeVar("BackboneFn", bound=Callable[..., nn.Module])

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(fn: BackboneFn | None = None, *, name: str | None = None) -> Any:
    """Register a backbone constructor under ``name`` (default: the function's name).

    Usable bare (``@register_backbone``) or with a name (``@register_backbone(name="x")``). The constructor
    must accept ``num_classes`` as keyword argument and return a module implementing the backbone
    interface (``forward_features``, ``forward_head``, ``num_features``).
    """

    def decorator(f: BackboneFn) -> BackboneFn:
        key = name or f.__name__
        if key in _BACKBONES and _BACKBONES[key] is not f:
            raise ValueError(
                f"A backbone named {key!r} is already registered ({_BACKBONES[key].__module__})."
            )
        _BACKBONES[key] = f
        return f

    return decorator(fn) if fn is not None else decorator


def register_variant(
    name: str, cls: Callable[..., nn.Module], doc: str, **arch: Any
) -> Callable[..., nn.Module]:
    """Register ``name``: ``cls`` with the architecture arguments ``arch`` as its new defaults (timm's
    ``model_args`` idiom). Every argument of ``cls`` stays overridable through ``backbone_kwargs``
    (``create_backbone("resnet18_cifar", 10, width=32)``); ``doc`` is the variant's one-line description.
    """
    factory = functools.partial(cls, **arch)
    factory.__doc__ = doc
    return register_backbone(factory, name=name)


def list_backbones(pattern: str = "*") -> list[str]:
    """Sorted names of the registered backbones matching a shell-style ``pattern`` (e.g. ``"resnet*"``)."""
    return sorted(n for n in _BACKBONES if fnmatch.fnmatchcase(n, pattern))


def create_backbone(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a backbone by name.

    Args:
        name: a registered name (see :func:`list_backbones`), ``torchvision/<model>`` or ``timm/<model>``.
        num_classes: number of output logits.
        **kwargs: passed to the backbone's constructor (e.g. ``width`` for ``compact_cifar``).

    Raises:
        ConfigError: (a ``ValueError``) for an unknown name; the message lists the closest registered names.
    """
    if name.startswith("torchvision/"):
        from lit_vision.models.zoo.external import create_torchvision_backbone

        return create_torchvision_backbone(name.removeprefix("torchvision/"), num_classes, **kwargs)
    if name.startswith("timm/"):
        from lit_vision.models.zoo.external import create_timm_backbone

        return create_timm_backbone(name.removeprefix("timm/"), num_classes, **kwargs)
    if name not in _BACKBONES:
        close = difflib.get_close_matches(name, list(_BACKBONES), n=5, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown backbone {name!r}.{hint} Registered backbones (--model.backbone): "
            f"{', '.join(list_backbones())}. External models are reachable as 'torchvision/<name>' or "
            "'timm/<name>'."
        )
    return _BACKBONES[name](num_classes=num_classes, **kwargs)
