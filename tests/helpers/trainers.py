"""Trainers for tests that drive Lightning directly, without the CLI."""

from __future__ import annotations

import lightning as L


def quiet_trainer(**kwargs) -> L.Trainer:
    """A CPU Trainer with no logger, checkpoints, progress bar or model summary; ``kwargs`` add or override
    (callbacks, max_epochs/max_steps, limit_val_batches, ...)."""
    settings = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
    }
    return L.Trainer(**{**settings, **kwargs})
