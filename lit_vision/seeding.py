"""The run's global seed, for code that derives its own random streams from it (per epoch, per rank).

``seed_everything`` (the CLI's ``seed_everything``, default 0) exports the seed as ``PL_GLOBAL_SEED`` so
that DDP processes and dataloader workers see it; Lightning has no public getter, so this is the one place
that reads the variable. Every layer may import this module: it imports nothing of lit_vision.
"""

from __future__ import annotations

import os

__all__ = ["run_seed"]


def run_seed() -> int:
    """The seed ``seed_everything`` set for this run (0 when it was not called)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))
