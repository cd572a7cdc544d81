"""Errors that end a command with their message (``error: ...``, exit code 1) instead of a traceback.

Every layer may raise them: this module imports nothing of lit_vision. Each is a ``ValueError`` or
``RuntimeError`` so library users who catch those keep working.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ConfigError", "exit_on_error"]


class ConfigError(ValueError):
    """An option value the project refuses (a negative size, a probability outside [0, 1], an unknown name).

    Raised before any work starts; the message names the option as the user writes it (``--data.batch_size``)
    and says what a valid value looks like.
    """


@contextmanager
def exit_on_error(*errors: type[BaseException], code: int = 1) -> Iterator[None]:
    """Turn ``errors`` raised inside into ``error: <message>`` on stderr and ``SystemExit(code)``: how every
    command ends on an error it explains itself."""
    try:
        yield
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(code) from None
