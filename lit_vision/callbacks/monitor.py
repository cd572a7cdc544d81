"""Callbacks that watch a validation metric and wait for it: the shared part of the CLI's ``best.ckpt``
(:class:`~lit_vision.callbacks.SafeModelCheckpoint`) and of early stopping
(:class:`~lit_vision.callbacks.EarlyStopping`).

Before the first validation of a ``fit`` there is no monitored metric: Lightning's ``ModelCheckpoint`` warns
at every save point that it "could not find the monitored key", and its ``EarlyStopping`` raises. A short
smoke run (``--trainer.max_steps 20``) that ends before the first validation of a long epoch is not an error.
Once a validation has run, a missing metric (a misspelt ``monitor``) fails as loudly as Lightning makes it.
"""

from __future__ import annotations

from typing import Any

import lightning as L

__all__ = ["WaitsForMonitor"]


class WaitsForMonitor:
    """Mixin (first among the bases) for a Lightning callback with a ``monitor`` attribute: the callback's
    own hooks call :meth:`waiting` and skip their checks while it is true."""

    monitor: str | None
    _validated = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = False
        super().on_fit_start(trainer, pl_module)  # type: ignore[misc]

    def waiting(self, trainer: L.Trainer) -> bool:
        """No validation of this fit has run yet and the monitored metric does not exist."""
        missing = self.monitor not in trainer.callback_metrics
        return self.monitor is not None and not self._validated and missing

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.sanity_checking:
            self._validated = True
        super().on_validation_end(trainer, pl_module, *args)  # type: ignore[misc]
