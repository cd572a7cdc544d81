"""Progress bars that show the training loss without reading the device every step.

Lightning converts every ``self.log(..., on_step=True, prog_bar=True)`` value to a Python number whenever
anything asks for the trainer's metrics (the bar's refresh, ``callback_metrics``), and keeps the last
logged value until the epoch ends: once the loss has been logged for the bar, every later step of the
epoch reads it back to the host (a GPU sync per step, which stalls the queue of kernels). Here the module
logs the step loss for the loggers only (``prog_bar=False``) and hands the bar the tensor it logged
(``ImageClassifier.progress_bar_loss``, replaced on the steps Lightning writes logs). The bar reads that
tensor once when it changes: one host read per logging step, none in between.

The CLI installs :class:`RichProgressBar` (the bar Lightning picks, ``rich`` being installed) unless the
trainer's bar is off or a config names its own bar; :class:`TQDMProgressBar` is the tqdm one (a config's
``trainer.callbacks`` entry). Lightning's own bars still work, with the per-step reads described above.
"""

from __future__ import annotations

from collections.abc import MutableMapping, MutableSequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar
from lightning.pytorch.callbacks import TQDMProgressBar as LightningTQDMProgressBar

__all__ = ["RichProgressBar", "StepLossDisplay", "TQDMProgressBar", "add_default_progress_bar"]

#: the name the step loss has in the bar (and in the loggers' metrics)
STEP_LOSS = "train/loss_step"


class StepLossDisplay:
    """Mixin for a Lightning progress bar: adds the module's last logged step loss to the bar's items,
    read on the host only when the module replaced it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown_tensor: Any = None  # the tensor last read (compared by identity, kept alive)
        self._shown_value: float | None = None

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        loss = getattr(pl_module, "progress_bar_loss", None)
        if loss is not None and loss is not self._shown_tensor:
            self._shown_tensor, self._shown_value = loss, float(loss)  # the one read per logging step
        if self._shown_value is not None:
            items[STEP_LOSS] = self._shown_value
        return items


class RichProgressBar(StepLossDisplay, LightningRichProgressBar):
    """Lightning's ``RichProgressBar`` with the step loss read only on logging steps."""


class TQDMProgressBar(StepLossDisplay, LightningTQDMProgressBar):
    """Lightning's ``TQDMProgressBar`` with the step loss read only on logging steps."""


def add_default_progress_bar(
    trainer_kwargs: MutableMapping[str, Any], callbacks: MutableSequence[Any]
) -> None:
    """Where Lightning would add its default bar, add :class:`RichProgressBar` to ``callbacks`` (the
    Trainer then uses it instead): not with ``enable_progress_bar: false`` or ``barebones: true``, nor
    when ``trainer_kwargs["callbacks"]`` or ``callbacks`` already hold a bar."""
    if trainer_kwargs.get("enable_progress_bar") is False or trainer_kwargs.get("barebones"):
        return
    given = trainer_kwargs.get("callbacks")
    given = [] if given is None else given if isinstance(given, list | tuple) else [given]
    if not any(isinstance(c, ProgressBar) for c in [*given, *callbacks]):
        callbacks.append(RichProgressBar())  # rich is a dependency: the bar Lightning would pick
