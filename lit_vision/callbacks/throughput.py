"""Training speed per epoch, logged like any metric (``metrics.csv``, W&B).

Lightning's ``ThroughputMonitor`` synchronizes the GPU after every batch to time it, which stalls the
host-device pipeline. This callback reads the clock twice per epoch: when the epoch's training batches start
and when they end (before validation), synchronizing the device only there.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["EpochThroughput"]


class EpochThroughput(L.Callback):
    """Logs ``perf/train_images_per_s`` (all ranks together), ``perf/epoch_train_s`` (seconds of training
    batches in the epoch, validation excluded) and ``perf/train_s`` (training seconds so far in the run,
    carried across resumes) at the end of every training epoch; on CUDA also ``perf/gpu_mem_peak_gb``
    (peak memory allocated on this rank's device so far).
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._elapsed = 0.0  # training seconds of the current epoch
        self._images = 0  # training images of the current epoch, this rank
        self._total = 0.0  # training seconds of the whole run (saved in checkpoints)

    @staticmethod
    def _now(trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)  # queued kernels belong to this interval
        return time.perf_counter()

    def _stop_clock(self, trainer: L.Trainer) -> None:
        if self._start is not None:
            self._elapsed += self._now(trainer) - self._start
            self._start = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._elapsed, self._images = 0.0, 0
        self._start = self._now(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[1])  # a shape, not a device read

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation inside fit (the stage is "validating" then, so check the trainer's function)
        if trainer.state.fn == TrainerFn.FITTING:
            self._stop_clock(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # mid-epoch validation (val_check_interval < 1): training batches follow, so restart the clock
        if (
            trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and self._images > 0
            and not self._epoch_batches_done(trainer)
        ):
            self._start = self._now(trainer)

    @staticmethod
    def _epoch_batches_done(trainer: L.Trainer) -> bool:
        return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch) or trainer.should_stop

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_clock(trainer)
        if self._images == 0 or self._elapsed <= 0:
            return
        self._total += self._elapsed
        images = self._images * trainer.world_size  # every rank trains on the same number of batches
        metrics = {
            "perf/train_images_per_s": images / self._elapsed,
            "perf/epoch_train_s": self._elapsed,
            "perf/train_s": self._total,
        }
        if trainer.strategy.root_device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(trainer.strategy.root_device)
            metrics["perf/gpu_mem_peak_gb"] = peak / 2**30
        # Plain Python floats, logged once per epoch: no device tensors, no reduction across ranks.
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, rank_zero_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"train_s": self._total}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._total = float(state_dict.get("train_s", 0.0))
