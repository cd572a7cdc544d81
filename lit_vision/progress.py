"""Progress for the long jobs outside a Trainer loop: decoding a dataset into the cache and export
(report, explain and predict.py run in a Trainer and show its bar). Drawn with rich on standard error, by
rank 0 only (the other ranks of a DDP run stay quiet); in a log file (no terminal) rich prints the
finished bar once instead of animating it. Every layer may import this module: it imports nothing of
lit_vision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.progress import track as rich_track

__all__ = ["status", "track"]

T = TypeVar("T")


def _console() -> Console:
    return Console(stderr=True)


def track(items: Iterable[T], total: int, description: str, min_total: int = 2) -> Iterator[T]:
    """Yield ``items``, showing a bar of ``total`` steps (none on other ranks or under ``min_total``)."""
    if rank_zero_only.rank != 0 or total < min_total:
        yield from items
        return
    yield from rich_track(items, total=total, description=description, console=_console(), transient=False)


def status(message: str) -> AbstractContextManager[object]:
    """A spinner with ``message`` while a step of unknown length runs (rank 0)."""
    if rank_zero_only.rank != 0:
        return nullcontext()
    return _console().status(message)
