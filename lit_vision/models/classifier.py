"""``ImageClassifier``: the LightningModule wrapping any backbone."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_vision.data.normalization import normalize
from lit_vision.errors import ConfigError
from lit_vision.lightning_workarounds import attached_trainer, estimated_stepping_batches
from lit_vision.models.factory_args import factory_settings, left_unset
from lit_vision.models.layers import own_forward_batchnorms
from lit_vision.models.losses import SoftTargetCrossEntropy
from lit_vision.models.metrics import DeviceMean
from lit_vision.models.registry import create_backbone
from lit_vision.models.schedulers import build_scheduler, extend_kwargs, fills_total_steps
from lit_vision.seeding import run_seed

__all__ = ["ImageClassifier", "ScheduleChangeError", "TrainBatchTransform"]


class ScheduleChangeError(ValueError):
    """A resume whose LR schedule horizon differs from the checkpoint's, without a chosen policy."""


# (module, images, targets, batch_idx) -> (images, targets): how callbacks (MixUp/CutMix, FGSM) change a
# training batch after normalization; targets may become soft (N, C) probabilities.
TrainBatchTransform = Callable[["ImageClassifier", Tensor, Tensor, int], tuple[Tensor, Tensor]]


def _check_learning_rates(optimizer: Any, scheduler: Any) -> None:
    """A zero or negative learning rate (or OneCycleLR ``max_lr``) refused when the model is built: torch's
    optimizers check ``lr`` only when they are built, after the data is loaded, and a scheduler's peak
    never."""
    for option, factory, name in (
        ("model.optimizer", optimizer, "lr"),
        ("model.scheduler", scheduler, "max_lr"),
    ):
        value = (getattr(factory, "keywords", None) or {}).get(name) if factory is not None else None
        values = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, int | float) and not v > 0 for v in values):
            raise ConfigError(
                f"--{option}.init_args.{name} {value}: a learning rate must be > 0 (e.g. 0.1 for SGD, 1e-3 "
                "for AdamW); to freeze the weights, use `validate`/`test` instead of fit."
            )


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
        if nonfinite_loss not in ("raise", "skip", "ignore"):
            raise ConfigError(
                f"--model.nonfinite_loss must be raise, skip or ignore, got {nonfinite_loss!r}."
            )
        if not nonfinite_check_every_n_steps >= 1:
            raise ConfigError(
                f"--model.nonfinite_check_every_n_steps must be >= 1, got {nonfinite_check_every_n_steps}."
            )
        if on_schedule_change not in ("refuse", "extend", "restart"):
            raise ConfigError(
                f"--model.on_schedule_change must be refuse, extend or restart, got {on_schedule_change!r}."
            )
        _check_learning_rates(optimizer, scheduler)
        if not norm_bias_lr_scale > 0:
            raise ConfigError(f"--model.norm_bias_lr_scale must be > 0, got {norm_bias_lr_scale}.")
        if scheduler_interval not in ("step", "epoch"):
            raise ConfigError(
                f"--model.scheduler_interval must be step or epoch, got {scheduler_interval!r}."
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for num_classes={num_classes}.")
        self.num_classes = num_classes
        self.class_names = (
            list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        )
        if isinstance(backbone, nn.Module):
            self.backbone = backbone
        else:
            try:
                self.backbone = create_backbone(backbone, num_classes=num_classes, **(backbone_kwargs or {}))
            except TypeError as err:  # an argument the backbone's constructor does not take
                raise ConfigError(f"--model.backbone_kwargs {backbone_kwargs} for {backbone}: {err}") from err
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = SoftTargetCrossEntropy(label_smoothing)
        # Normalization of the training data ([0, 1] units), filled from the datamodule in setup() and saved
        # in checkpoints so prediction and export need no dataset.
        self.register_buffer("input_mean", torch.zeros(3))
        self.register_buffer("input_std", torch.ones(3))
        #: side of the square training images in pixels (set from the datamodule, saved in checkpoints)
        self.input_size = 32

        top5 = min(5, num_classes)
        # No torchmetrics input validation: it reads the targets' range on the host every batch (a GPU sync,
        # and a few ms per step on CPU); the loss has already checked the targets (a bad label fails there).
        acc = {"average": "micro", "validate_args": False}
        self.train_acc = MulticlassAccuracy(num_classes, **acc)
        self.val_acc = MulticlassAccuracy(num_classes, **acc)
        self.test_acc = MulticlassAccuracy(num_classes, **acc)
        self.test_acc_top5 = MulticlassAccuracy(num_classes, top_k=top5, **acc)
        # Epoch losses as metrics: averaged over every sample of every rank with one sync at epoch end
        # (self.log(sync_dist=True) would all-reduce every step); DeviceMean never reads the device per batch.
        self.train_loss, self.val_loss, self.test_loss = DeviceMean(), DeviceMean(), DeviceMean()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run remembers its best epoch

        # Extension points for callbacks (plain attributes: never saved in checkpoints).
        self._train_batch_transforms: list[tuple[int, TrainBatchTransform]] = []
        #: Replaces ``self(x)`` in test and predict when set (test-time augmentation); returns logits.
        self.eval_forward: Callable[[Tensor], Tensor] | None = None
        # Resume bookkeeping of the LR schedule (see on_schedule_change): the horizon the schedule was built
        # for, the checkpoint being resumed (until training starts), and the optimizer settings and schedule
        # position to put in place once Lightning has restored the optimizer and scheduler states.
        self._schedule_horizon: int | None = None
        self._resuming: dict[str, Any] | None = None
        self._schedule_fix: tuple[list[dict[str, Any]], int] | None = None
        #: nonfinite_loss=raise: (global step, epoch, batch) of the first non-finite loss, kept on the device
        #: (-1 while every loss was finite) and read only at the checks (see _raise_if_nonfinite)
        self._first_nonfinite: Tensor | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Copies (EMA's deepcopy, pickling) get no callback hooks and no optimizer/scheduler factories: the
        # bound methods drag callbacks along, and the CLI's factories hold the whole CLI, so the Trainer,
        # its processes and the datamodule's in-memory images would be copied too (or fail to pickle).
        state = super().__getstate__()
        state["_train_batch_transforms"] = []
        state["eval_forward"] = None
        state["optimizer_factory"] = state["scheduler_factory"] = None
        state["_resuming"] = state["_schedule_fix"] = state["_first_nonfinite"] = None
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
        pretrained = self.hparams.get("pretrained_weights")
        if stage == "fit" and pretrained and getattr(self.trainer, "ckpt_path", None) is None:
            from lit_vision.models.finetune import load_backbone_weights

            report = load_backbone_weights(self.backbone, pretrained)
            new_head = f"; new head: {', '.join(report['new_head'])}" if report["new_head"] else ""
            rank_zero_info(f"Loaded {len(report['loaded'])} backbone tensors from {pretrained}{new_head}")
        if (
            stage == "fit"
            and hasattr(self.backbone, "init_from_data")
            and not pretrained
            and getattr(self.trainer, "ckpt_path", None) is None
        ):
            self.init_backbone_from_data(datamodule)

    def init_backbone_from_data(self, datamodule: Any) -> None:
        """The backbone's data-dependent initialization (see ``lit_vision.models.backbone``) from a set-up
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
            "schedule_horizon": self._schedule_horizon,
            "optimizer_settings": self.optimizer_settings() if self.optimizer_factory is not None else None,
        }

    def on_train_epoch_start(self) -> None:
        set_epoch = getattr(self.backbone, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.current_epoch)
        if not self.hparams.reseed_every_epoch:
            return
        seed = run_seed()  # set by seed_everything (the CLI's default: 0)
        state = np.random.SeedSequence([seed, self.current_epoch, self.global_rank]).generate_state(2)
        # Before the train loader is iterated: its RandomSampler draws the epoch's order from torch's RNG.
        torch.manual_seed(int(state[0]))  # CPU and every CUDA device
        np.random.seed(int(state[1]))
        random.seed(int(state[1]))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture with a message, not a page of missing keys."""
        self.input_size = int(checkpoint.get("lit_vision", {}).get("input_size", self.input_size))
        if attached_trainer(self) is not None and self.trainer.state.fn == "fit":
            # configure_optimizers (called next) compares the schedule horizons and may replace the saved
            # scheduler state in this dict before Lightning restores it.
            self._resuming = checkpoint
        saved = checkpoint.get("hyper_parameters", {})
        mine = {k: self.hparams.get(k) for k in ("backbone", "num_classes", "backbone_kwargs")}
        theirs = {k: saved.get(k) for k in mine}
        if isinstance(mine["backbone"], str) and any(
            k in saved and theirs[k] != mine[k] for k in ("backbone", "num_classes")
        ):
            raise ConfigError(
                f"The checkpoint was trained with backbone={theirs['backbone']!r}, "
                f"num_classes={theirs['num_classes']} (backbone_kwargs={theirs['backbone_kwargs']}); this "
                f"run builds backbone={mine['backbone']!r}, num_classes={mine['num_classes']}. Use the "
                "config the checkpoint was trained with (its run directory holds config.yaml), or, to train "
                "it on other classes, load it as pretrained weights instead of --ckpt_path."
            )

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
        if mode == "skip" and not self._loss_is_finite(loss):
            rank_zero_warn(
                f"Non-finite training loss ({loss.item()}) at {self._where(self.global_step, batch_idx)}: "
                "optimizer step skipped."
            )
            return None  # Lightning skips backward and the optimizer step for this batch
        if mode == "raise":
            self._watch_nonfinite(loss, batch_idx)
            if (self.global_step + 1) % self.hparams.get("nonfinite_check_every_n_steps", 100) == 0:
                self._raise_if_nonfinite()
        # Soft targets (MixUp/CutMix): accuracy against the dominant label.
        self.train_acc(logits.detach(), y if y.ndim == 1 else y.argmax(-1))
        self.train_loss(loss, weight=len(y))
        trainer = attached_trainer(self)
        if trainer is None or (self.global_step + 1) % trainer.log_every_n_steps == 0:
            # Only on the steps Lightning writes logs (its rule with one batch per optimizer step): a step
            # value in the progress bar or the logs is read on the host, a GPU sync every step otherwise.
            # Same name Lightning gives an on_step + on_epoch log: the value is this rank's own.
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _where(self, step: int, batch_idx: int, epoch: int | None = None) -> str:
        epoch = self.current_epoch if epoch is None else epoch
        return f"global step {step} (epoch {epoch}, batch {batch_idx} of the epoch)"

    def _watch_nonfinite(self, loss: Tensor, batch_idx: int) -> None:
        """Remember the first non-finite loss on the device: three tiny kernels, no host read."""
        if self._first_nonfinite is None or self._first_nonfinite.device != loss.device:
            self._first_nonfinite = torch.full((3,), -1, dtype=torch.long, device=loss.device)
        first = self._first_nonfinite
        fresh = ~torch.isfinite(loss.detach()) & (first[0] < 0)
        here = (self.global_step, self.current_epoch, batch_idx)
        for i, value in enumerate(here):  # Python ints go to the kernels as arguments, not as copies
            first[i] = torch.where(fresh, value, first[i])

    def _raise_if_nonfinite(self) -> None:
        """One host read of the device-side record; raises if a loss was non-finite on any rank."""
        if self._first_nonfinite is None:
            return
        first = self._first_nonfinite
        if attached_trainer(self) is not None and self.trainer.world_size > 1:
            # all ranks stop together (the others would wait forever in the next all-reduce); max over the
            # ranks' records: -1 where a rank saw none, else the latest of the ranks' first bad steps
            first = self.trainer.strategy.reduce(first.clone(), reduce_op="max")
        step, epoch, batch = (int(v) for v in first.tolist())
        if step < 0:
            return
        # the record stays: any later checkpoint write in this run raises too
        raise FloatingPointError(
            f"Non-finite training loss at {self._where(step, batch, epoch)} (noticed at global step "
            f"{self.global_step}; model.nonfinite_check_every_n_steps sets how often the loss is read). "
            "Checkpoints written before this step are kept. Try a lower learning rate, gradient clipping "
            "(trainer.gradient_clip_val), 32-true precision, or model.nonfinite_loss=skip to step over such "
            "batches."
        )

    def _loss_is_finite(self, loss: Tensor) -> bool:
        """Whether the loss is finite on every rank: under DDP all ranks must skip or stop together, or the
        ones that carry on would wait forever in the gradient all-reduce."""
        finite = torch.isfinite(loss.detach()).float()
        if attached_trainer(self) is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce(finite, reduce_op="min")
        return bool(finite.item())

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
        """Trainable parameters split into a decayed group and a no-decay group (norm weights, biases), and
        with ``norm_bias_lr_scale != 1`` a last group of normalization biases carrying ``lr_scale``."""
        decay_all = self.hparams.weight_decay_norm_and_bias
        scale = float(self.hparams.get("norm_bias_lr_scale", 1.0))
        scaled = set()
        if scale != 1.0:
            norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
            scaled = {id(m.bias) for m in self.modules() if isinstance(m, norms) and m.bias is not None}
        decay, no_decay, norm_bias = [], [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            if id(p) in scaled:
                norm_bias.append(p)
            else:
                (decay if decay_all or p.ndim > 1 else no_decay).append(p)
        groups: list[dict[str, Any]] = [{"params": decay}]
        if not decay_all:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        if norm_bias:
            groups.append(
                {"params": norm_bias, "lr_scale": scale, **({} if decay_all else {"weight_decay": 0.0})}
            )
        return groups

    def _global_batch_size(self) -> int:
        """Examples per optimizer step over all devices."""
        trainer = self.trainer
        per_device = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
        if per_device is None:
            per_device = getattr(trainer.train_dataloader, "batch_size", None)
        if per_device is None:
            raise ValueError("The optimizer needs batch_size, and the run's batch size is unknown: set it.")
        return int(per_device) * trainer.world_size * trainer.accumulate_grad_batches

    def build_optimizer(self, batch_size: int | None = None) -> torch.optim.Optimizer:
        """The configured optimizer over :meth:`parameter_groups`, group ``lr_scale`` applied; ``batch_size``
        (examples per optimizer step) goes to an optimizer that takes one its config left unset."""
        takes_batch = left_unset(self.optimizer_factory, "batch_size")
        optimizer = self.optimizer_factory(
            self.parameter_groups(), **({"batch_size": batch_size} if takes_batch else {})
        )
        for group in optimizer.param_groups:
            scale = group.get("lr_scale", 1.0)
            if scale != 1.0:  # the same decay per step (lr x weight_decay) at scale x the LR
                group["lr"] *= scale
                group["weight_decay"] = group.get("weight_decay", 0.0) / scale
        return optimizer

    def configure_optimizers(self) -> Any:
        takes_batch = left_unset(self.optimizer_factory, "batch_size")
        optimizer = self.build_optimizer(self._global_batch_size() if takes_batch else None)
        if self.scheduler_factory is None:
            self._schedule_horizon = None
            if self._resuming is not None:
                self._reconcile_schedule(optimizer, None, 0)
            return optimizer
        interval = self.hparams.scheduler_interval
        total = int(
            estimated_stepping_batches(self.trainer) if interval == "step" else self.trainer.max_epochs
        )
        scheduler = build_scheduler(self.scheduler_factory, optimizer, total)
        plateau = isinstance(scheduler, ReduceLROnPlateau)
        self._schedule_horizon = total if fills_total_steps(self.scheduler_factory) and not plateau else None
        if self._resuming is not None:
            scheduler = self._reconcile_schedule(optimizer, scheduler, total)
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

    def optimizer_settings(self) -> dict[str, Any]:
        """The optimizer and scheduler as configured (class and init arguments, ``total_steps`` left out: the
        horizon is compared on its own), JSON-safe: saved in checkpoints so that a resume can tell when the
        user changed them (the restored optimizer state would otherwise carry the checkpoint's values)."""
        return {
            "optimizer": factory_settings(self.optimizer_factory),
            "scheduler": factory_settings(self.scheduler_factory, skip=("total_steps",)),
        }

    def _changed_settings(self) -> list[str]:
        """``section.name: old -> new`` for every optimizer/scheduler setting that differs from the
        checkpoint's (none for checkpoints written before the settings were saved)."""
        assert self._resuming is not None
        then = (self._resuming.get("lit_vision") or {}).get("optimizer_settings")
        if then is None:
            return []
        now = self.optimizer_settings()
        changes = []
        for section in ("optimizer", "scheduler"):
            old, new = then.get(section) or {}, now.get(section) or {}
            if old.get("class") != new.get("class"):
                changes.append(f"{section}: {old.get('class')} -> {new.get('class')}")
                continue
            old_args, new_args = old.get("args", {}), new.get("args", {})
            for name in sorted(set(old_args) | set(new_args)):
                if old_args.get(name) != new_args.get(name):
                    changes.append(f"{section}.{name}: {old_args.get(name)} -> {new_args.get(name)}")
        return changes

    def _reconcile_schedule(self, optimizer: Any, scheduler: Any, total: int) -> Any:
        """Resuming: apply ``on_schedule_change`` when the checkpoint's horizon differs from ``total`` or the
        optimizer/scheduler settings differ from the checkpoint's. Without a scheduler (constant LR) changed
        optimizer settings simply apply: there is no schedule to reconcile them with."""
        assert self._resuming is not None
        changed = self._changed_settings()
        settings = (
            f"model.optimizer/model.scheduler settings differ from the checkpoint's ({'; '.join(changed)})"
        )
        if scheduler is None:
            if changed:
                rank_zero_info(f"The {settings}: the new values replace the checkpoint's.")
                self._schedule_fix = (self._group_settings(optimizer), 0)
            return scheduler
        saved_states = self._resuming.get("lr_schedulers") or []
        if not saved_states:
            return scheduler
        saved = saved_states[0]
        done = int(saved.get("last_epoch", 0))
        old = (self._resuming.get("lit_vision") or {}).get("schedule_horizon") or saved.get("total_steps")
        horizon_changed = self._schedule_horizon is not None and old is not None and int(old) != total
        if not horizon_changed and not changed:
            return scheduler
        unit = "optimizer steps" if self.hparams.scheduler_interval == "step" else "epochs"
        policy = self.hparams.on_schedule_change
        name = type(scheduler).__name__
        if horizon_changed:
            old = int(old)
            what = (
                f"The checkpoint's LR schedule ({name}) was built for a run of {old} {unit} and stopped "
                f"after {done}; this run's trainer.max_steps/max_epochs make it {total} {unit}."
            )
            if changed:
                what += f" The {settings}."
        else:
            old = total
            what = (
                f"The {settings}, and the restored state of the LR schedule ({name}, stopped after {done} "
                f"{unit}) would keep the checkpoint's values."
            )
        if self._schedule_horizon is None:  # no horizon: a schedule that only a restart can rebuild
            remaining = "a fresh schedule from this point"
        else:
            remaining = f"a fresh schedule over the remaining {max(total - done, 0)} {unit}"
        if policy == "refuse":
            extend = (
                f"--model.on_schedule_change extend (keep the warmup, the decay ending at {total}), "
                if self._schedule_horizon is not None
                else ""
            )
            raise ScheduleChangeError(
                f"{what} Choose what the schedule does: {extend}--model.on_schedule_change restart "
                f"({remaining}, with the new settings), or resume with the run's original "
                f"{'length' if horizon_changed else 'settings'}."
            )
        if self._schedule_horizon is not None and done >= total:
            raise ScheduleChangeError(f"{what} The run is already past the new end: nothing to {policy}.")
        factory = self.scheduler_factory
        if policy == "extend":
            if self._schedule_horizon is None:
                raise ScheduleChangeError(
                    f"{what} on_schedule_change=extend stretches a schedule built for a number of steps; "
                    f"{name} has no such horizon. Use --model.on_schedule_change restart ({remaining})."
                )
            scheduler = build_scheduler(
                factory, optimizer, total, **extend_kwargs(scheduler, factory, old, total)
            )
            position = done
        else:
            scheduler = build_scheduler(factory, optimizer, max(total - done, 1))
            position = 0
        rank_zero_info(f"{what} on_schedule_change={policy}: the schedule is rebuilt.")
        # Lightning restores the optimizer and scheduler states from this dict after this hook: the rebuilt
        # schedule's state replaces the saved one, and on_train_start puts back the new schedule's optimizer
        # settings (the restored optimizer state carries the old ones) at the resume position.
        state = scheduler.state_dict()
        if "last_epoch" in state:
            state["last_epoch"] = position
        saved_states[0] = state
        self._schedule_fix = (self._group_settings(optimizer), position)
        return scheduler

    @staticmethod
    def _group_settings(optimizer: Any) -> list[dict[str, Any]]:
        """Every param group's settings (lr, momentum, a scheduler's initial_lr...) without its parameters."""
        return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]

    def on_fit_start(self) -> None:
        self._check_sync_batchnorm()

    def _check_sync_batchnorm(self) -> None:
        """``trainer.sync_batchnorm`` combinations that would train wrong or slowly, refused with a reason."""
        synced = [name for name, m in self.backbone.named_modules() if isinstance(m, nn.SyncBatchNorm)]
        if not synced:
            return
        if self.hparams.compile:
            # pytorch/pytorch#161302: dynamo cannot trace SyncBatchNorm's collective, so the graph breaks at
            # every BatchNorm (and some versions fail to compile it at all, #107372)
            raise ValueError(
                "model.compile with trainer.sync_batchnorm: torch.compile cannot trace SyncBatchNorm and "
                f"would split the backbone's graph at each of its {len(synced)} BatchNorm layers. Turn one "
                "off: trainer.sync_batchnorm: false (per-process BatchNorm statistics, fine at per-GPU "
                "batches of 32 and more) or model.compile: false."
            )
        dropped = [
            n for n in self._own_forward_bns if type(self.backbone.get_submodule(n)) is nn.SyncBatchNorm
        ]
        if dropped:
            cls = self._own_forward_bns[dropped[0]]
            raise ValueError(
                f"trainer.sync_batchnorm turned backbone.{dropped[0]} (a {cls.__qualname__}, whose forward "
                "does more than normalize, e.g. timm's BatchNorm + activation) into a plain SyncBatchNorm: "
                "it would train without what its forward adds. Use lit_vision's plugin, which keeps it: "
                "Trainer(sync_batchnorm=True, plugins=[lit_vision.plugins.SyncBatchNorm()]) (train.py "
                "does this)."
            )

    def on_train_start(self) -> None:
        self._resuming = None  # restored by now; the checkpoint dict is Lightning's to free
        if self._schedule_fix is None:
            return
        hyper, position = self._schedule_fix
        self._schedule_fix = None
        for group, settings in zip(self.trainer.optimizers[0].param_groups, hyper, strict=True):
            group.update(settings)
        if position > 0:
            # one step back and one forward: the LR (and momentum) of the resume step on the new curve,
            # set the way the scheduler sets them
            scheduler = self.trainer.lr_scheduler_configs[0].scheduler
            scheduler.last_epoch = position - 1
            with warnings.catch_warnings():  # torch warns of a step() before any optimizer.step() here
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                scheduler.step()
