"""Arguments the model fills in for the optimizer and scheduler factories of a config.

A factory argument left unset in YAML (``None``) that only the run can know is supplied when the model
builds the optimizer and scheduler: ``total_steps`` of a scheduler (the run's optimizer steps) and
``batch_size`` of an optimizer (examples per optimizer step, over every device).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["bound_or_default", "examples_per_step", "factory_settings", "factory_target", "left_unset"]


def left_unset(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` takes an argument ``name`` that its config left unset.

    ``factory`` is what LightningCLI builds from ``class_path``/``init_args`` (a ``functools.partial``-like
    object whose ``keywords`` hold every init argument), or a plain class or function.
    """
    bound = getattr(factory, "keywords", None)
    if bound is not None:
        return name in bound and bound[name] is None
    try:
        parameter = inspect.signature(factory).parameters.get(name)
    except (TypeError, ValueError):  # builtins without signatures
        return False
    return parameter is not None and parameter.default in (None, inspect.Parameter.empty)


def factory_settings(factory: Callable[..., Any] | None, skip: Iterable[str] = ()) -> dict[str, Any] | None:
    """``{"class": "module.Name", "args": {...}}`` of a factory (see :func:`left_unset`), JSON-safe (tuples
    become lists, other objects their ``str``), ``skip`` left out; ``None`` for no factory.

    A CLI-built factory is ``functools.partial(instantiator, cls)`` with the init arguments as keywords; a
    plain class or function has no arguments bound."""
    if factory is None:
        return None
    bound = dict(getattr(factory, "keywords", None) or {})
    target = factory_target(factory)
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', repr(target))}"
    args = {k: v for k, v in bound.items() if k not in set(skip)}
    return {"class": name, "args": json.loads(json.dumps(args, default=str))}


def factory_target(factory: Callable[..., Any]) -> Any:
    """The class (or function) a factory builds: the class inside a CLI-built partial, else the factory."""
    target = next((a for a in getattr(factory, "args", ()) if isinstance(a, type)), None)
    return target or getattr(factory, "func", factory)


def bound_or_default(factory: Callable[..., Any], name: str, kwargs: dict[str, Any] | None = None) -> Any:
    """The value ``name`` will have when ``factory(**kwargs)`` is called: ``kwargs``, else the factory's
    bound argument, else the signature's default of the class it builds (``None`` if it has none)."""
    if kwargs and name in kwargs:
        return kwargs[name]
    bound = getattr(factory, "keywords", None) or {}
    if name in bound:
        return bound[name]
    try:
        parameter = inspect.signature(factory_target(factory)).parameters.get(name)
    except (TypeError, ValueError):
        return None
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def examples_per_step(trainer: Any) -> int:
    """Examples per optimizer step over all devices (an optimizer's ``batch_size``): the datamodule's (else
    the train loader's) per-device batch size x devices x gradient accumulation."""
    per_device = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if per_device is None:
        per_device = getattr(trainer.train_dataloader, "batch_size", None)
    if per_device is None:
        raise ValueError("The optimizer needs batch_size, and the run's batch size is unknown: set it.")
    return int(per_device) * trainer.world_size * trainer.accumulate_grad_batches
