"""``ImageClassifier``: the LightningModule wrapping any backbone.

It holds the steps, metrics and hooks; its parts live beside it: parameter groups and the optimizer
(``param_groups``), the NaN/inf loss guard (``nonfinite``), resuming into a changed schedule
(``schedule_resume``), the SyncBatchNorm refusals (``sync_batchnorm_checks``) and the refusals of bad
option values and of a checkpoint of another architecture (``classifier_checks``). Its docstring documents
every argument: it is the CLI's ``--help`` for ``--model.*``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MaxMetric

from lit_vision.data.normalization import normalize
from lit_vision.lightning_workarounds import attached_trainer, estimated_stepping_batches
from lit_vision.models.training.classifier_checks import (
    build_backbone,
    check_arguments,
    check_same_architecture,
)
from lit_vision.models.training.factory_args import examples_per_step, left_unset
from lit_vision.models.training.losses import SoftTargetCrossEntropy
from lit_vision.models.training.metrics import DeviceMean, accuracy
from lit_vision.models.training.nonfinite import NonFiniteGuard, where
from lit_vision.models.training.param_groups import build_optimizer, parameter_groups
from lit_vision.models.training.pretrained import initialize_backbone_for_fit
from lit_vision.models.training.schedule_resume import ScheduleChangeError, ScheduleResume, optimizer_settings
from lit_vision.models.training.schedulers import build_scheduler, fills_total_steps
from lit_vision.models.training.sync_batchnorm_checks import check_sync_batchnorm
from lit_vision.models.zoo.layers import own_forward_batchnorms
from lit_vision.seeding import reseed_for_epoch

__all__ = ["ImageClassifier", "ScheduleChangeError", "TrainBatchTransform"]


# (module, images, targets, batch_idx) -> (images, targets): how callbacks (MixUp/CutMix, FGSM) change a
# training batch after normalization; targets may become soft (N, C) probabilities.
TrainBatchTransform = Callable[["ImageClassifier", Tensor, Tensor, int], tuple[Tensor, Tensor]]


class ImageClassifier(L.LightningModule):
    """Image classification with any backbone.

    Args:
        backbone: a registered name (``compact_cifar``, ``resnet18_cifar``, see ``list_backbones()``),
            ``torchvision/<name>``, ``timm/<name>``, or any ``nn.Module`` given by ``class_path`` (it must
            output ``num_classes`` logits).
        num_classes: number of classes (linked from ``data.num_classes`` by the CLI).
        backbone_kwargs: extra constructor arguments for a named backbone (e.g. ``{width: 1.5}``).
        label_smoothing: weight of the uniform distribution mixed into every target (hard or soft).
        optimizer: optimizer factory, e.g. ``class_path: torch.optim.SGD`` with its ``init_args``; a
            ``batch_size`` argument left unset (``lit_vision.models.DecoupledSGD``) is filled with the
            examples per optimizer step (per-device batch x devices x gradient accumulation).
        scheduler: LR scheduler factory, stepped every ``scheduler_interval``; a ``total_steps`` argument
            left unset (OneCycleLR, ``lit_vision.models.WarmupCosineLR``) is filled with the run's number of
            optimizer steps. ``None``: constant LR.
        scheduler_interval: ``step`` (per optimizer step) or ``epoch``. Schedulers that watch a metric
            (``ReduceLROnPlateau``) step once per epoch, after validation, whatever this says.
        scheduler_monitor: the logged metric a monitored scheduler (``ReduceLROnPlateau``) watches:
            ``val/loss`` (set the scheduler's ``mode: min``, its default) or ``val/acc`` (``mode: max``).
        weight_decay_norm_and_bias: apply weight decay to normalization weights and biases too (off by
            default: decaying them only shrinks the scale BN learns).
        norm_bias_lr_scale: learning-rate multiplier for the biases of normalization layers, whose weight
            decay is divided by it so the decay per step stays the same (airbench's ``bias_scaler``: 64).
            Schedulers that set absolute LRs (OneCycleLR's ``max_lr``) override it.
        class_names: class names in label order (linked from ``data.classes``), stored in checkpoints.
        channels_last: run the backbone in channels-last memory format (faster convs on CPU and GPU).
        compile: compile the backbone with ``torch.compile`` (in place: checkpoint keys stay those of the
            plain model, so compiled and plain checkpoints load into each other).
        nonfinite_loss: what a NaN/inf training loss does. ``raise``: stop with an error naming the first
            such step, epoch and batch; the loss is watched on the device and read every
            ``nonfinite_check_every_n_steps`` steps, before every validation and before every checkpoint is
            written, so no checkpoint holds weights trained past a NaN and the last good ones survive.
            ``skip``: skip that batch's optimizer step with a warning (training goes on; this reads the loss
            on the host every step, one GPU sync per step); ``ignore``: no check.
        nonfinite_check_every_n_steps: with ``nonfinite_loss: raise``, read the device-side flag every this
            many optimizer steps (one host sync each time; 1: stop at the failing step itself).
        reseed_every_epoch: reseed torch, numpy and random at the start of every training epoch from (the
            run's seed, the epoch, the rank): shuffling, crops and dropout of an epoch do not depend on how
            the run got there, so ``fit`` resumed from an end-of-epoch checkpoint repeats the straight run
            exactly.
        pretrained_weights: a lit_vision checkpoint or a ``state_dict`` file of the same backbone, loaded
            when ``fit`` starts (not when resuming). Every tensor must match except the classifier head,
            which stays freshly initialized when ``num_classes`` differs (transfer learning).
        on_schedule_change: what ``fit --ckpt_path`` does when the LR schedule's horizon (the optimizer
            steps of the whole run, or its epochs with ``scheduler_interval: epoch``) differs from the
            checkpoint's, e.g. after raising ``trainer.max_epochs``. ``refuse``: stop before training with
            an error naming both horizons. ``extend``: keep weights, optimizer state and step count, and
            continue on the schedule a run of the new length with the same warmup (in steps) follows: the
            decay is stretched to end at the new horizon, so the LR at the resume step is that curve's value.
            ``restart``: keep weights and optimizer state, and run a fresh schedule (warmup included) over
            the remaining steps, as when fine-tuning from the checkpoint. Only schedulers whose
            ``total_steps`` is filled in (OneCycleLR, WarmupCosineLR) have a horizon: constant LR and epoch
            milestones resume into a run of any length.
    """

    #: the step loss last logged (a device tensor, replaced on logging steps) that progress bars show
    progress_bar_loss: Tensor | None = None

    def __init__(
        self,
        backbone: str | nn.Module = "compact_cifar",
        num_classes: int = 10,
        backbone_kwargs: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "step",
        scheduler_monitor: str = "val/loss",
        weight_decay_norm_and_bias: bool = False,
        norm_bias_lr_scale: float = 1.0,
        class_names: list[str] | None = None,
        channels_last: bool = False,
        compile: bool = False,
        nonfinite_loss: Literal["raise", "skip", "ignore"] = "raise",
        nonfinite_check_every_n_steps: int = 100,
        reseed_every_epoch: bool = True,
        pretrained_weights: str | None = None,
        on_schedule_change: Literal["refuse", "extend", "restart"] = "refuse",
    ) -> None:
        super().__init__()
        self._backbone_compiled = False  # configure_model compiles once, whatever the number of stages
        self._own_forward_bns: dict[str, type] = {}  # set by configure_model; checked by on_fit_start
        self.save_hyperparameters(
            ignore=["optimizer", "scheduler"] + (["backbone"] if isinstance(backbone, nn.Module) else [])
        )
        # Refused here, when the CLI builds the model: before any data is read (ConfigError: one error line)
        check_arguments(locals())
        self.num_classes = num_classes
        self.class_names = [str(i) for i in range(num_classes)] if class_names is None else list(class_names)
        self.backbone = build_backbone(backbone, num_classes, backbone_kwargs)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = SoftTargetCrossEntropy(label_smoothing)
        # Normalization of the training data ([0, 1] units), filled from the datamodule in setup() and saved
        # in checkpoints so prediction and export need no dataset.
        self.register_buffer("input_mean", torch.zeros(3))
        self.register_buffer("input_std", torch.ones(3))
        #: side of the square training images in pixels (set from the datamodule, saved in checkpoints)
        self.input_size = 32

        self.train_acc, self.val_acc, self.test_acc = (accuracy(num_classes) for _ in range(3))
        self.test_acc_top5 = accuracy(num_classes, top_k=min(5, num_classes))
        # Epoch losses as metrics: averaged over every sample of every rank with one sync at epoch end
        # (self.log(sync_dist=True) would all-reduce every step); DeviceMean never reads the device per batch.
        self.train_loss, self.val_loss, self.test_loss = DeviceMean(), DeviceMean(), DeviceMean()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run remembers its best epoch

        # Extension points for callbacks (plain attributes: never saved in checkpoints).
        self._train_batch_transforms: list[tuple[int, TrainBatchTransform]] = []
        #: Replaces ``self(x)`` in test and predict when set (test-time augmentation); returns logits.
        self.eval_forward: Callable[[Tensor], Tensor] | None = None
        # Resume bookkeeping of the LR schedule (on_schedule_change; plain attributes, not saved)
        self._resume = ScheduleResume()
        #: nonfinite_loss=raise: the first non-finite loss, kept on the device, read only at the checks
        self._nonfinite = NonFiniteGuard()

    def __getstate__(self) -> dict[str, Any]:
        # Copies (EMA's deepcopy, pickling) get no callback hooks and no optimizer/scheduler factories: the
        # bound methods drag callbacks along, and the CLI's factories hold the whole CLI, so the Trainer,
        # its processes and the datamodule's in-memory images would be copied too (or fail to pickle).
        state = super().__getstate__()
        state["_train_batch_transforms"] = []
        state["eval_forward"] = None
        state["optimizer_factory"] = state["scheduler_factory"] = None
        state["_resume"], state["_nonfinite"] = ScheduleResume(), NonFiniteGuard()
        return state

    # ------------------------------------------------------------------ callback hooks
    def add_train_batch_transform(self, fn: TrainBatchTransform, order: int = 0) -> None:
        """Run ``fn`` on every training batch; lower ``order`` first (MixUp/CutMix 0, FGSM 10)."""
        self._train_batch_transforms.append((order, fn))
        self._train_batch_transforms.sort(key=lambda item: item[0])

    def remove_train_batch_transform(self, fn: TrainBatchTransform) -> None:
        self._train_batch_transforms = [item for item in self._train_batch_transforms if item[1] != fn]

    def eval_logits(self, x: Tensor) -> Tensor:
        """Logits for test/predict: ``eval_forward`` (e.g. TTA) when a callback set one, else ``self(x)``."""
        return self(x) if self.eval_forward is None else self.eval_forward(x)

    # ------------------------------------------------------------------ model
    def configure_model(self) -> None:
        # before the strategy sees the model: SyncBatchNorm conversion (trainer.sync_batchnorm) comes next
        self._own_forward_bns = own_forward_batchnorms(self.backbone)
        if self.hparams.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if self.hparams.compile and not self._backbone_compiled:
            # In place (nn.Module.compile), not `self.backbone = torch.compile(...)`: the wrapper would add
            # an `_orig_mod.` prefix to every state_dict key, and compiled and plain checkpoints would no
            # longer load into each other (pretrained weights, predict.py, export).
            self.backbone.compile()
            self._backbone_compiled = True

    def setup(self, stage: str) -> None:
        trainer = attached_trainer(self)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        # The datamodule's public contract (set up before this hook): channel statistics and image side,
        # stored with the weights so prediction and export need no dataset (lit_vision.data.normalization).
        if datamodule is not None and hasattr(datamodule, "mean") and hasattr(datamodule, "std"):
            self.input_mean.copy_(torch.as_tensor(datamodule.mean))
            self.input_std.copy_(torch.as_tensor(datamodule.std))
        if datamodule is not None and hasattr(datamodule, "input_size"):
            self.input_size = int(datamodule.input_size)
        if stage == "fit":
            resuming = getattr(self.trainer, "ckpt_path", None) is not None
            initialize_backbone_for_fit(self, datamodule, resuming)

    def init_backbone_from_data(self, datamodule: Any) -> None:
        """The backbone's data-dependent initialization (see ``lit_vision.models.zoo.backbone``) from a set-up
        lit_vision datamodule; ``fit`` calls it when it starts from scratch. It normalizes with
        ``input_mean``/``input_std``, which ``setup`` copies from the datamodule first."""
        count = int(getattr(self.backbone, "data_init_images", 5000))
        if not hasattr(datamodule, "train_images"):
            raise TypeError(
                f"{type(self.backbone).__name__} computes weights from the training images before fit, "
                "which needs a lit_vision datamodule (its train_images()); with other data, load pretrained "
                "weights (model.pretrained_weights) or call backbone.init_from_data(images) yourself."
            )
        images = datamodule.train_images(count).float() / 255.0  # (N, 3, H, W) in [0, 1]
        self.backbone.init_from_data(self.normalize(images.to(self.input_mean.device)))
        rank_zero_info(f"{type(self.backbone).__name__}: initialized from {len(images)} training images.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._raise_if_nonfinite()  # never write weights trained past a NaN/inf loss
        # What prediction and export need besides the weights and hparams: the training image size.
        checkpoint["lit_vision"] = {
            "input_size": self.input_size,
            "schedule_horizon": self._resume.horizon,
            "optimizer_settings": self.optimizer_settings() if self.optimizer_factory is not None else None,
        }

    def on_train_epoch_start(self) -> None:
        set_epoch = getattr(self.backbone, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.current_epoch)
        if not self.hparams.reseed_every_epoch:
            return
        # Before the train loader is iterated: its RandomSampler draws the epoch's order from torch's RNG.
        reseed_for_epoch(self.current_epoch, self.global_rank)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read the training image size, keep a checkpoint ``fit`` resumes from for the schedule checks, and
        refuse a checkpoint of another architecture with a message, not a page of missing keys."""
        self.input_size = int(checkpoint.get("lit_vision", {}).get("input_size", self.input_size))
        if attached_trainer(self) is not None and self.trainer.state.fn == "fit":
            # configure_optimizers (called next) compares the schedule horizons and may replace the saved
            # scheduler state in this dict before Lightning restores it.
            self._resume.resuming = checkpoint
        check_same_architecture(self.hparams, checkpoint.get("hyper_parameters", {}))

    def normalize(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (N, 3, H, W) -> the normalized input ``forward`` takes (training mean/std)."""
        return normalize(x, self.input_mean, self.input_std)

    def forward(self, x: Tensor) -> Tensor:
        """Normalized images (N, 3, H, W) -> logits (N, num_classes)."""
        logits = self.backbone(x)
        if logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"The backbone outputs {logits.shape[-1]} logits but num_classes={self.num_classes}; "
                "give the backbone the dataset's number of classes."
            )
        return logits

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor | None:
        x, y = batch[0], batch[1]
        for _, transform in self._train_batch_transforms:
            x, y = transform(self, x, y, batch_idx)
        logits = self(x)
        loss = self.criterion(logits, y)
        mode = self.hparams.nonfinite_loss
        if mode == "skip" and not NonFiniteGuard.loss_is_finite(loss, attached_trainer(self)):
            here = where(self.global_step, batch_idx, self.current_epoch)
            rank_zero_warn(f"Non-finite training loss ({loss.item()}) at {here}: optimizer step skipped.")
            return None  # Lightning skips backward and the optimizer step for this batch
        if mode == "raise":
            self._nonfinite.watch(loss, self.global_step, self.current_epoch, batch_idx)
            if (self.global_step + 1) % self.hparams.get("nonfinite_check_every_n_steps", 100) == 0:
                self._raise_if_nonfinite()
        # Epoch metrics: update only (a metric's forward also computes a step value nobody reads, ~3x the
        # ops); Lightning computes them where they are logged, at the epoch's end. Soft targets
        # (MixUp/CutMix): accuracy against the dominant label.
        self.train_acc.update(logits.detach(), y if y.ndim == 1 else y.argmax(-1))
        self.train_loss.update(loss, weight=len(y))
        trainer = attached_trainer(self)
        if trainer is None or (self.global_step + 1) % trainer.log_every_n_steps == 0:
            # Only on the steps Lightning writes logs (its rule with one batch per optimizer step), for the
            # loggers only: a prog_bar value is read on the host at every later step of the epoch. The bar
            # shows this tensor instead, read once (lit_vision.callbacks.progress_bar). Same name Lightning
            # gives an on_step + on_epoch log: the value is this rank's own.
            self.log("train/loss_step", loss, on_step=True, on_epoch=False)
            self.progress_bar_loss = loss.detach()
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _raise_if_nonfinite(self) -> None:
        self._nonfinite.raise_if_seen(attached_trainer(self), self.global_step)

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """Returns the logits (N, num_classes), for callbacks' ``on_validation_batch_end``."""
        x, y = batch[0], batch[1]
        logits = self(x)
        self.val_loss(self.criterion(logits, y), weight=len(y))
        self.val_acc(logits, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        return logits.detach()

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "fit":  # validation inside fit: do not score NaN weights as an epoch
            self._raise_if_nonfinite()

    def on_train_end(self) -> None:
        self._raise_if_nonfinite()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # the sanity check's untrained weights must not count as a best
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self.eval_logits(x)
        self.test_loss(self.criterion(logits, y), weight=len(y))
        self.test_acc(logits, y)
        self.test_acc_top5(logits, y)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        self.log("test/acc_top5", self.test_acc_top5, on_step=False, on_epoch=True)

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Class probabilities (N, num_classes)."""
        return self.eval_logits(batch[0]).float().softmax(-1)

    # ------------------------------------------------------------------ optimization
    def parameter_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters in optimizer groups (``lit_vision.models.training.param_groups``)."""
        return parameter_groups(
            self,
            decay_all=bool(self.hparams.weight_decay_norm_and_bias),
            norm_bias_lr_scale=float(self.hparams.get("norm_bias_lr_scale", 1.0)),
        )

    def build_optimizer(self, batch_size: int | None = None) -> torch.optim.Optimizer:
        """The configured optimizer over :meth:`parameter_groups`, group ``lr_scale`` applied; ``batch_size``
        (examples per optimizer step) goes to an optimizer that takes one its config left unset."""
        return build_optimizer(self.optimizer_factory, self.parameter_groups(), batch_size)

    def configure_optimizers(self) -> Any:
        takes_batch = left_unset(self.optimizer_factory, "batch_size")
        optimizer = self.build_optimizer(examples_per_step(self.trainer) if takes_batch else None)
        if self.scheduler_factory is None:
            self._resume.horizon = None
            if self._resume.resuming is not None:
                self._reconcile(optimizer, None, 0)
            return optimizer
        interval = self.hparams.scheduler_interval
        total = int(
            estimated_stepping_batches(self.trainer) if interval == "step" else self.trainer.max_epochs
        )
        scheduler = build_scheduler(self.scheduler_factory, optimizer, total)
        plateau = isinstance(scheduler, ReduceLROnPlateau)
        self._resume.horizon = total if fills_total_steps(self.scheduler_factory) and not plateau else None
        if self._resume.resuming is not None:
            scheduler = self._reconcile(optimizer, scheduler, total)
        if plateau:
            # Lightning steps it with the monitored value; the metric exists only after validation, so it
            # steps per epoch (a per-step plateau check would read a metric that is not there yet).
            return {
                "optimizer": optimizer,
                "lr_scheduler": {
                    "scheduler": scheduler,
                    "interval": "epoch",
                    "monitor": self.hparams.scheduler_monitor,
                },
            }
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    def _reconcile(self, optimizer: Any, scheduler: Any, total: int) -> Any:
        return self._resume.reconcile(
            optimizer,
            scheduler,
            total,
            factory=self.scheduler_factory,
            settings=self.optimizer_settings(),
            policy=self.hparams.on_schedule_change,
            interval=self.hparams.scheduler_interval,
        )

    def optimizer_settings(self) -> dict[str, Any]:
        """The configured optimizer and scheduler, as checkpoints record them (``schedule_resume``)."""
        return optimizer_settings(self.optimizer_factory, self.scheduler_factory)

    def on_fit_start(self) -> None:
        check_sync_batchnorm(self.backbone, bool(self.hparams.compile), self._own_forward_bns)

    def on_train_start(self) -> None:
        self._resume.apply(self.trainer)
