"""Errors that end a command with their message (``error: ...``, exit code 1) instead of a traceback.

Every layer may raise them: this module imports nothing of lit_vision. Each is a ``ValueError`` or
``RuntimeError`` so library users who catch those keep working.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """An option value the project refuses (a negative size, a probability outside [0, 1], an unknown name).

    Raised before any work starts; the message names the option as the user writes it (``--data.batch_size``)
    and says what a valid value looks like.
    """
