"""What the command-line apps (``predict.py``, ``report``, ``explain``, ``export``) share: how they name a
checkpoint, and errors that end with their message and an exit code instead of a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lit_vision.models.checkpoints import TRUST_CHECKPOINT_HELP

__all__ = ["add_checkpoint_arguments", "exit_on_error"]


def add_checkpoint_arguments(parser: argparse.ArgumentParser, ensemble: bool = False) -> None:
    """``--ckpt`` (repeatable with ``ensemble``: the checkpoints' probabilities are averaged) and
    ``--trust-checkpoint``."""
    if ensemble:
        parser.add_argument(
            "--ckpt", action="append", required=True, help="checkpoint; repeat for an ensemble"
        )
    else:
        parser.add_argument("--ckpt", required=True, help="a lit_vision checkpoint")
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_CHECKPOINT_HELP)


@contextmanager
def exit_on_error(*errors: type[BaseException], code: int = 1) -> Iterator[None]:
    """Turn ``errors`` raised inside into ``error: <message>`` on stderr and ``SystemExit(code)``."""
    try:
        yield
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(code) from None
