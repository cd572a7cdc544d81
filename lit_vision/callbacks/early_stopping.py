"""Early stopping that waits for its metric (``configs/tricks/early_stopping.yaml``).

Lightning's ``EarlyStopping`` (``strict=True``) raises ``RuntimeError: Early stopping conditioned on metric
... which is not available`` at the end of a training epoch that had no validation, e.g. a short smoke run
(``--trainer.max_steps 20``) that ends before the first validation of a long epoch. Before the first
validation of a ``fit`` there is nothing to stop on, so this one waits; once a validation has run, a missing
metric (a misspelt ``monitor``) still fails as loudly as Lightning's.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping as _LightningEarlyStopping

from lit_vision.callbacks.monitor import WaitsForMonitor

__all__ = ["EarlyStopping"]


class EarlyStopping(WaitsForMonitor, _LightningEarlyStopping):
    """Lightning's ``EarlyStopping`` (same arguments: ``monitor``, ``mode``, ``patience``, ``min_delta``...)
    that skips its checks until the first validation of the run has logged something.

    Whether the run ever validated is said once, by the CLI's ``checkpoint`` callback
    (:class:`~lit_vision.callbacks.SafeModelCheckpoint`), not here.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.waiting(trainer):
            super().on_train_epoch_end(trainer, pl_module)
