"""The run's global seed, for code that derives its own random streams from it (per epoch, per rank).

``seed_everything`` (the CLI's ``seed_everything``, default 0) exports the seed as ``PL_GLOBAL_SEED`` so
that DDP processes and dataloader workers see it; Lightning has no public getter, so this is the one place
that reads the variable. Every layer may import this module: it imports nothing of lit_vision.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["reseed_for_epoch", "run_seed"]


def run_seed() -> int:
    """The seed ``seed_everything`` set for this run (0 when it was not called)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def reseed_for_epoch(epoch: int, rank: int) -> None:
    """Reseed torch (CPU and every CUDA device), numpy and random from (the run's seed, ``epoch``, ``rank``):
    what an epoch draws then does not depend on how the run got there (``model.reseed_every_epoch``)."""
    state = np.random.SeedSequence([run_seed(), epoch, rank]).generate_state(2)
    torch.manual_seed(int(state[0]))
    np.random.seed(int(state[1]))
    random.seed(int(state[1]))
