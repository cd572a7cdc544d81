"""Workarounds for open Lightning bugs, each with its issue, in one place because each reads or sets private
members of Lightning's loops (no public way exists). Every layer may import this module: it imports nothing
of lit_vision. Delete a workaround when the Lightning release it needs is the minimum in ``pyproject.toml``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimated_stepping_batches"]


def estimated_stepping_batches(trainer: Any) -> int | float:
    """``trainer.estimated_stepping_batches``, without losing the train loader's state on a resume.

    ``configure_optimizers`` runs before Lightning restores a checkpoint. Asking for the step count there
    makes the fit loop build the train loader (and start its iterator) early; when the fit loop later runs,
    it keeps that loader and never loads the loader state the checkpoint holds (Lightning issue #20550,
    open in 2.6). A run resumed mid-epoch would then start the epoch's sample order from the beginning and
    train on some images twice and on others not at all, with either data back-end. Dropping the early
    loader makes the fit loop build it again after the restore, with the saved state loaded.
    """
    loop = trainer.fit_loop
    built_before = loop._combined_loader is not None
    total = trainer.estimated_stepping_batches
    if trainer.ckpt_path is not None and not built_before and loop._combined_loader is not None:
        if loop._data_fetcher is not None:
            loop._data_fetcher.teardown()  # stops workers the early iterator started
            loop._data_fetcher = None
        loop._combined_loader = None
    return total
