"""Arguments the model fills in for the optimizer and scheduler factories of a config.

A factory argument left unset in YAML (``None``) that only the run can know is supplied when the model
builds the optimizer and scheduler: ``total_steps`` of a scheduler (the run's optimizer steps) and
``batch_size`` of an optimizer (examples per optimizer step, over every device).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["left_unset"]


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
