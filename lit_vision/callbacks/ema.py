"""Exponential moving average of the weights, on top of Lightning's ``EMAWeightAveraging``.

Polyak & Juditsky (1992); the EMA form used by Inception-v3, EfficientNet and timm ``ModelEmaV3``:
``w_ema <- decay * w_ema + (1 - decay) * w`` after each optimizer step. Lightning's callback does the
bookkeeping (``AveragedModel``, swapping weights for validation, checkpoint layout); this subclass fixes
what it gets wrong for us:

* **Delayed start.** With ``update_starting_at_step > 0`` Lightning swaps the never-updated copy (the initial
  weights) in for validation and copies it into the model at the end of a run shorter than the delay. Here
  nothing is swapped, copied or checkpointed as "the average" until the average has been updated once.
* **Precision.** The average is kept in fp32 even when the model runs in ``bf16-true``/``16-true``;
  Lightning's swap (``a, b = b, a`` through the model's dtype) would round the fp32 average to half
  precision at every validation. Here the model's own weights are backed up and restored instead, so the
  average is never rounded.
* **Update.** One foreach ``lerp`` per (device, dtype) group (``torch.optim.swa_utils.get_ema_multi_avg_fn``)
  instead of a Python loop over tensors; integer buffers (BatchNorm's ``num_batches_tracked``) are copied,
  not averaged. BatchNorm running statistics are averaged like weights (``use_buffers=True``).
* **Resume.** The callback state holds the last update step and epoch, the checkpoint holds both weight sets
  (``state_dict``: the average, used by ``test``/``predict``/``load_from_checkpoint``;
  ``current_model_state``: the raw weights), so a resumed fit continues exactly.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn

__all__ = ["EMA"]


def _ema_multi_avg_fn(decay: float) -> Any:
    """Foreach EMA update that tolerates a model dtype different from the (fp32) average's."""
    lerp = get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        # AveragedModel groups by the *average's* (device, dtype); the model's tensors may be bf16/fp16.
        current = [c if c.dtype == a.dtype else c.to(a.dtype) for a, c in zip(averaged, current, strict=True)]
        if torch.is_floating_point(averaged[0]):
            lerp(averaged, current, num_averaged)
        else:  # counters such as num_batches_tracked: an average of step counts means nothing
            torch._foreach_copy_(averaged, current)

    return update


class EMA(EMAWeightAveraging):
    """EMA of weights and BatchNorm statistics; validation, test, predict and checkpoints use the average.

    Args:
        decay: EMA decay per update; the average spans about ``1 / (1 - decay)`` updates (0.999: ~1000 steps,
            ~3 CIFAR epochs at batch 128).
        update_every_n_steps: update after every n-th optimizer step.
        update_starting_at_step: first optimizer step (0-based) that updates the average; before it the
            average is just the current weights and nothing is swapped.
        update_starting_at_epoch: alternatively, also update at the end of every epoch from this one on.
        device: where the average lives (default: the model's device; ``cpu`` saves accelerator memory).
        use_buffers: average buffers (BatchNorm running statistics) too.
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        device: str | None = None,
        use_buffers: bool = True,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        super().__init__(
            device=device,
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )
        self.decay = decay
        # Lightning passes avg_fn=get_ema_avg_fn (one tensor at a time); use the foreach form instead.
        self._kwargs.pop("avg_fn", None)
        self._kwargs["multi_avg_fn"] = _ema_multi_avg_fn(decay)
        self._backup: list[Tensor] | None = None

    # ------------------------------------------------------------------ state
    @property
    def has_average(self) -> bool:
        """Whether the average has been updated at least once (before that it is just a stale copy)."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    @property
    def average_module(self) -> L.LightningModule | None:
        """The averaged copy of the LightningModule (``None`` outside ``fit``)."""
        return None if self._average_model is None else self._average_model.module

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            # Lightning warns about sharding for any configure_model(); ours only sets channels_last/compile.
            warnings.filterwarnings(
                "ignore", message=".*WeightAveraging callback with a model that overrides"
            )
            super().setup(trainer, pl_module, stage)
        if self._average_model is not None:
            # Created before the precision plugin converts the model, but make fp32 explicit: a half-precision
            # average loses updates smaller than its resolution (1 - decay = 1e-3 is below bf16's 2^-8).
            self._average_model.module.float()

    # ------------------------------------------------------------------ swapping
    def _pairs(self, pl_module: L.LightningModule) -> list[tuple[Tensor, Tensor]]:
        assert self._average_model is not None
        average = itertools.chain(
            self._average_model.module.parameters(), self._average_model.module.buffers()
        )
        current = itertools.chain(pl_module.parameters(), pl_module.buffers())
        return list(zip(average, current, strict=True))

    def _swap_models(self, pl_module: L.LightningModule) -> None:
        """First call: back up the model and load the average; second call: restore the backup.

        Unlike Lightning's value swap, the fp32 average is never written back through the model's dtype.
        """
        if self._backup is None:
            if not self.has_average:
                return
            pairs = self._pairs(pl_module)
            self._backup = [cur.detach().clone() for _, cur in pairs]
            with torch.no_grad():
                for avg, cur in pairs:
                    cur.copy_(avg)
        else:
            with torch.no_grad():
                for (_, cur), saved in zip(self._pairs(pl_module), self._backup, strict=True):
                    cur.copy_(saved)
            self._backup = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.has_average:  # a run shorter than the delayed start keeps its own (trained) weights
            self._copy_average_to_current(pl_module)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "latest_update_step": self._latest_update_step,
            "latest_update_epoch": self._latest_update_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._latest_update_step = state_dict["latest_update_step"]
        self._latest_update_epoch = state_dict.get("latest_update_epoch", -1)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._backup is not None:
            raise RuntimeError("EMA: checkpoint saved while the average is swapped in; this is a bug.")
        if self._average_model is not None and not self.has_average:
            # Nothing averaged yet: the model's own weights are the best answer for state_dict, and resuming
            # restores the (not yet started) average from them with n_averaged = 0.
            checkpoint["current_model_state"] = checkpoint["state_dict"]
            checkpoint["averaging_state"] = {"n_averaged": self._average_model.n_averaged.clone()}
            return
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._average_model is None:
            return  # validate/test/predict: the checkpoint's state_dict already holds the averaged weights
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
