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
* **Update.** One foreach ``lerp`` over every floating tensor instead of ``AveragedModel.update_parameters``,
  which reads its update counter on the host twice per update (two GPU syncs) and regroups the tensors each
  time; the update count is kept on the host here, the tensor lists are built once. Integer buffers
  (BatchNorm's ``num_batches_tracked``) are copied, not averaged. BatchNorm running statistics are averaged
  like weights (``use_buffers=True``).
* **Warmup** (opt-in): timm ``ModelEmaV3``'s decay ramp, for runs too short for a fixed decay to forget the
  initial weights, or airbench94's ramp over the run's progress.
* **Lookahead** (opt-in): the average is copied into the model after each update (airbench94).
* **Resume.** The callback state holds the last update step and epoch, the checkpoint holds both weight sets
  (``state_dict``: the average, used by ``test``/``predict``/``load_from_checkpoint``;
  ``current_model_state``: the raw weights), so a resumed fit continues exactly.

``WeightAveraging`` has no public accessor for its state: ``lit_vision.lightning_workarounds``
(``EMAWeightAveragingState``, the base class here) gives its private members public names, and
``tests/test_lightning_contract.py`` pins them.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from lit_vision.errors import ConfigError
from lit_vision.lightning_workarounds import EMAWeightAveragingState

__all__ = ["EMA"]


def ema_decay(
    decay: float, warmup: str, power: float, updates: int = 0, step: int = 0, total_steps: int = 1
) -> float:
    """Decay of the next update.

    * ``none``: ``decay``.
    * ``updates`` (timm ``ModelEmaV3``'s warmup): ``min(decay, 1 - (1 + updates) ** -power)``, where
      ``updates`` counts the earlier updates: the first ones weigh the current weights heavily, so the
      average never drags the fast-moving early weights along for long. It reaches ``decay`` after
      ``(1 - decay) ** (-1 / power) - 1`` updates (0.999 with power 2/3: about 31,600).
    * ``progress`` (airbench94): ``decay * (step / total_steps) ** power``, where ``step`` is the optimizer
      step just taken (1-based): move fast early, average strongly at the end.
    """
    if warmup == "updates":
        return min(decay, 1.0 - (1.0 + updates) ** -power)
    if warmup == "progress":
        return decay * min(1.0, step / max(1, total_steps)) ** power
    return decay


class EMA(EMAWeightAveragingState):
    """EMA of weights and BatchNorm statistics; validation, test, predict and checkpoints use the average.

    Args:
        decay: EMA decay per update, in (0, 1); the average spans about ``1 / (1 - decay)`` updates (0.999:
            ~1000 steps, ~3 CIFAR epochs at batch 128).
        update_every_n_steps: update after every n-th optimizer step.
        update_starting_at_step: first optimizer step (0-based) that updates the average; before it the
            average is just the current weights and nothing is swapped.
        update_starting_at_epoch: alternatively, also update at the end of every epoch from this one on.
        device: where the average lives (default: the model's device; ``cpu`` saves accelerator memory).
        use_buffers: average buffers (BatchNorm running statistics) too.
        warmup: ramp the decay up from 0 (see :func:`ema_decay`). ``updates``: timm ``ModelEmaV3``'s
            ``min(decay, 1 - (1 + n) ** -warmup_power)`` after n updates. ``progress``: airbench94's
            ``decay * (step / total_steps) ** warmup_power``. ``none``: a fixed decay, whose first average
            keeps a weight of ``decay ** n`` after n updates (0.999 after 1,600 updates: 20%), which ruins
            runs shorter than a few times ``1 / (1 - decay)`` steps.
        warmup_power: exponent of the ramp (default: 2/3 for ``updates``, timm's, which reaches 0.999 after
            about 31,600 updates; 3 for ``progress``, airbench's).
        lookahead: after every update copy the average into the model, and again after an epoch's last
            batch (Lookahead, Zhang et al. 2019, as airbench94 uses it): training goes on from the average.
        step_updates_from_epoch: no step updates before this epoch (0-based; airbench94: 3), whatever the
            number of steps per epoch.
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        device: str | None = None,
        use_buffers: bool = True,
        warmup: Literal["none", "updates", "progress"] = "none",
        warmup_power: float | None = None,
        lookahead: bool = False,
        step_updates_from_epoch: int | None = None,
    ) -> None:
        # Refused here, when the CLI builds the callback, before any data is loaded. 0 would make the average
        # the current weights and 1 would never move it: both are typos, not choices.
        if not 0.0 < decay < 1.0:
            raise ConfigError(
                f"--ema.init_args.decay must be in (0, 1) (0.999 averages over ~1000 updates), got {decay}."
            )
        if warmup not in ("none", "updates", "progress"):
            raise ConfigError(f"--ema.init_args.warmup must be none, updates or progress, got {warmup!r}.")
        if warmup_power is None:
            warmup_power = 3.0 if warmup == "progress" else 2 / 3
        if not warmup_power > 0:
            raise ConfigError(f"--ema.init_args.warmup_power must be > 0, got {warmup_power}.")
        if not update_every_n_steps >= 1:
            raise ConfigError(
                f"--ema.init_args.update_every_n_steps must be >= 1, got {update_every_n_steps}."
            )
        counters = {
            "update_starting_at_step": update_starting_at_step,
            "update_starting_at_epoch": update_starting_at_epoch,
            "step_updates_from_epoch": step_updates_from_epoch,
        }
        for name, value in counters.items():
            if value is not None and not value >= 0:
                raise ConfigError(f"--ema.init_args.{name} must be >= 0 (0-based), or unset, got {value}.")
        super().__init__(
            device=device,
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )
        self.decay, self.warmup, self.warmup_power = decay, warmup, warmup_power
        self.lookahead, self.step_updates_from_epoch = lookahead, step_updates_from_epoch
        self._step, self._total_steps = 0, 1  # for the progress warmup; set before each update
        self._backup: list[Tensor] | None = None
        #: updates so far, the initial copy included (AveragedModel's n_averaged, mirrored on the host)
        self._updates = 0
        #: (average, model) tensor lists: floating ones (averaged) and integer ones (copied); built once
        self._lists: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]] | None = None

    def _tensor_lists(self, pl_module: L.LightningModule) -> tuple[list[Tensor], ...]:
        if self._lists is None:
            pairs = self._pairs(pl_module)
            floats = [(a, c) for a, c in pairs if a.is_floating_point()]
            ints = [(a, c) for a, c in pairs if not a.is_floating_point()]
            self._lists = (
                [a for a, _ in floats], [c for _, c in floats], [a for a, _ in ints], [c for _, c in ints]
            )  # fmt: skip
        return self._lists

    @torch.no_grad()
    def _update_average(self, pl_module: L.LightningModule) -> None:
        """``average <- decay * average + (1 - decay) * weights`` (the first update copies): a foreach op per
        group and no host read of a device value."""
        assert self.average_model is not None
        avg_f, cur_f, avg_i, cur_i = self._tensor_lists(pl_module)
        # the model may run in bf16/fp16 (or on another device than a `device: cpu` average)
        cur_f = [
            c if c.dtype == a.dtype and c.device == a.device else c.to(a)
            for a, c in zip(avg_f, cur_f, strict=True)
        ]
        if self._updates == 0:
            torch._foreach_copy_(avg_f, cur_f)
        else:
            decay = ema_decay(
                self.decay, self.warmup, self.warmup_power, self._updates, self._step, self._total_steps
            )
            torch._foreach_lerp_(avg_f, cur_f, 1.0 - decay)
        for a, c in zip(avg_i, cur_i, strict=True):  # counters: an average of step counts means nothing
            a.copy_(c)
        self.average_model.n_averaged += 1  # kept for checkpoints; a device add, not a read
        self._updates += 1

    @torch.no_grad()
    def _load_average(self, pl_module: L.LightningModule) -> None:
        """Copy the average into the model (Lookahead, end of training)."""
        avg_f, cur_f, avg_i, cur_i = self._tensor_lists(pl_module)
        for average, current in ((avg_f, cur_f), (avg_i, cur_i)):
            for a, c in zip(average, current, strict=True):
                c.copy_(a)

    # ------------------------------------------------------------------ updates
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.step_updates_from_epoch is not None and trainer.current_epoch < self.step_updates_from_epoch:
            return
        self._step, self._total_steps = trainer.global_step, max(1, int(trainer.estimated_stepping_batches))
        # Lightning's rule (WeightAveraging.on_train_batch_end) with the update done here
        updated = trainer.global_step > self.latest_update_step and self.should_update(
            step_idx=trainer.global_step - 1
        )
        if updated:
            self._update_average(pl_module)
            self.latest_update_step = trainer.global_step
        if not (self.lookahead and self.has_average):
            return
        if updated or batch_idx + 1 >= trainer.num_training_batches:
            # Lookahead: training continues from the average. At the epoch's last batch too, before validation
            # and the end-of-epoch checkpoint, so a resumed run starts where a straight one goes on.
            self._load_average(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's rule (WeightAveraging.on_train_epoch_end) with the update done here
        epoch = trainer.current_epoch
        if epoch > self.latest_update_epoch and self.should_update(epoch_idx=epoch):
            self._step = trainer.global_step
            self._update_average(pl_module)
            self.latest_update_epoch = epoch

    # ------------------------------------------------------------------ state
    @property
    def has_average(self) -> bool:
        """Whether the average has been updated at least once (before that it is just a stale copy)."""
        return self.average_model is not None and self._updates > 0

    @property
    def average_module(self) -> L.LightningModule | None:
        """The averaged copy of the LightningModule (``None`` outside ``fit``)."""
        return None if self.average_model is None else self.average_model.module

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            # Lightning warns about sharding for any configure_model(); ours only sets channels_last/compile.
            warnings.filterwarnings(
                "ignore", message=".*WeightAveraging callback with a model that overrides"
            )
            super().setup(trainer, pl_module, stage)
        self._updates, self._lists = 0, None  # a fresh average (a resume sets the count from its checkpoint)
        if self.average_model is not None:
            # Created before the precision plugin converts the model, but make fp32 explicit: a half-precision
            # average loses updates smaller than its resolution (1 - decay = 1e-3 is below bf16's 2^-8).
            self.average_model.module.float()

    # ------------------------------------------------------------------ swapping
    def _pairs(self, pl_module: L.LightningModule) -> list[tuple[Tensor, Tensor]]:
        assert self.average_model is not None
        average = itertools.chain(self.average_model.module.parameters(), self.average_model.module.buffers())
        current = itertools.chain(pl_module.parameters(), pl_module.buffers())
        return list(zip(average, current, strict=True))

    def swap_models(self, pl_module: L.LightningModule) -> None:
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
            self._load_average(pl_module)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "latest_update_step": self.latest_update_step,
            "latest_update_epoch": self.latest_update_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.latest_update_step = state_dict["latest_update_step"]
        self.latest_update_epoch = state_dict.get("latest_update_epoch", -1)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._backup is not None:
            raise RuntimeError("EMA: checkpoint saved while the average is swapped in; this is a bug.")
        if self.average_model is not None and not self.has_average:
            # Nothing averaged yet: the model's own weights are the best answer for state_dict, and resuming
            # restores the (not yet started) average from them with n_averaged = 0.
            checkpoint["current_model_state"] = checkpoint["state_dict"]
            checkpoint["averaging_state"] = {"n_averaged": self.average_model.n_averaged.clone()}
            return
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.average_model is None:
            return  # validate/test/predict: the checkpoint's state_dict already holds the averaged weights
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        self._updates = int(self.average_model.n_averaged)  # one host read, when resuming
