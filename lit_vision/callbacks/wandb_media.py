"""Validation media for Weights & Biases: sample grid, confusion matrix, per-class table, gradients, and
Grad-CAM overlays of a fixed set of validation images (where the model looks, epoch after epoch).

Metrics are computed on every rank with torchmetrics (``compute()`` syncs them under DDP); only rank zero
writes to W&B (Lightning's logger methods are ``rank_zero_only``), at the trainer's global step. Without a
``WandbLogger`` among the trainer's loggers the callback does nothing (and says so once).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lit_vision.data.normalization import denormalize
from lit_vision.errors import ConfigError
from lit_vision.models.inference.heatmaps import HEATMAP_METHODS, heatmaps, overlay

__all__ = ["WandbMediaLogger", "confusion_matrix_figure"]


def confusion_matrix_figure(matrix: Tensor, class_names: list[str]) -> Any:
    """Row-normalized confusion matrix (true x predicted) as a matplotlib figure, drawn by torchmetrics
    (cell values written up to 30 classes, where they stay readable). ``matrix``: counts or rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    norm = matrix.float().cpu() / matrix.float().sum(1, keepdim=True).clamp_min(1e-12).cpu()
    size = max(4.0, 0.45 * k)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    MulticlassConfusionMatrix(k).plot(
        val=norm, ax=ax, add_text=k <= 30, labels=list(class_names), cmap="Blues"
    )
    fig.tight_layout()
    return fig


class WandbMediaLogger(L.Callback):
    """Log validation media to W&B after every validation epoch (not the sanity check).

    Args:
        num_samples: validation images in the sample grid, captioned ``pred / true``.
        confusion_matrix: log the row-normalized confusion matrix as an image.
        per_class_table: log a table of per-class precision, recall, F1 and support.
        watch: ``gradients``, ``parameters`` or ``all``: histograms via ``WandbLogger.watch``; ``None``: off.
        watch_log_freq: steps between ``watch`` histograms.
        gradcam: Grad-CAM overlays (``val/gradcam``) of the first ``gradcam`` validation images after every
            validation epoch, for the predicted class: the same images each time (the validation loader is
            not shuffled), so the run's page shows how the evidence moves as the model trains. 0: off.
            Computed on rank 0 only, with the weights being validated (EMA's when EMA is on).
        gradcam_method: any method of ``lit_vision.explain`` that gives one heatmap (``gradcam``,
            ``gradcam++``, ``cam``, ``saliency``, ``occlusion``).
        gradcam_layer: the backbone module Grad-CAM reads (``python -m lit_vision.explain --list-layers``);
            ``None``: the last convolution with a map of at least 8x8.
    """

    def __init__(
        self,
        num_samples: int = 32,
        confusion_matrix: bool = True,
        per_class_table: bool = True,
        watch: str | None = None,
        watch_log_freq: int = 100,
        gradcam: int = 0,
        gradcam_method: str = "gradcam",
        gradcam_layer: str | None = None,
    ) -> None:
        # Refused here, when the CLI builds the callback, before any data is loaded.
        option = "--wandb_media.init_args."
        if watch not in (None, "gradients", "parameters", "all"):
            raise ConfigError(f"{option}watch must be gradients, parameters, all or unset, got {watch!r}.")
        for name, value, low in (
            ("num_samples", num_samples, 0),
            ("watch_log_freq", watch_log_freq, 1),
            ("gradcam", gradcam, 0),
        ):
            if not value >= low:
                raise ConfigError(f"{option}{name} must be >= {low}, got {value}.")
        if gradcam_method not in HEATMAP_METHODS:
            raise ConfigError(
                f"{option}gradcam_method must be one of {', '.join(HEATMAP_METHODS)}, got {gradcam_method!r}."
            )
        self.gradcam, self.gradcam_method, self.gradcam_layer = gradcam, gradcam_method, gradcam_layer
        self._gradcam_images: list[Tensor] = []
        self.num_samples, self.confusion_matrix, self.per_class_table = (
            num_samples,
            confusion_matrix,
            per_class_table,
        )
        self.watch, self.watch_log_freq = watch, watch_log_freq
        self._metrics: MetricCollection | None = None
        self._samples: list[tuple[Tensor, Tensor, Tensor]] = []
        self._warned = False

    @staticmethod
    def wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self.wandb_logger(trainer)
        if logger is None:
            rank_zero_warn(
                "WandbMediaLogger: no WandbLogger configured (configs/logger/wandb.yaml); nothing logged."
            )
        elif self.watch is not None:
            logger.watch(pl_module, log=self.watch, log_freq=self.watch_log_freq)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        k = pl_module.num_classes
        self._metrics = MetricCollection(
            {
                "confusion": MulticlassConfusionMatrix(k),
                "precision": MulticlassPrecision(k, average=None),
                "recall": MulticlassRecall(k, average=None),
                "f1": MulticlassF1Score(k, average=None),
            }
        ).to(pl_module.device)
        self._samples = []
        self._gradcam_images = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: tuple[Tensor, ...],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._metrics is None or not isinstance(outputs, Tensor):
            return
        x, y = batch[0], batch[1]
        preds = outputs.argmax(-1)
        self._metrics.update(preds, y)
        kept = sum(len(s[0]) for s in self._samples)
        if kept < self.num_samples:
            take = self.num_samples - kept
            # back to [0, 1] pixels for display
            images = denormalize(x[:take], pl_module.input_mean, pl_module.input_std).clamp(0, 1).cpu()
            self._samples.append((images, preds[:take].cpu(), y[:take].cpu()))
        held = sum(len(g) for g in self._gradcam_images)
        if trainer.is_global_zero and held < self.gradcam:
            pixels = denormalize(x[: self.gradcam - held], pl_module.input_mean, pl_module.input_std)
            self._gradcam_images.append((pixels.clamp(0, 1) * 255).round().to(torch.uint8))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._metrics is None:
            return
        values = self._metrics.compute()  # every rank: the states are synced across DDP ranks
        self._metrics = None
        logger = self.wandb_logger(trainer)
        if trainer.sanity_checking or logger is None:
            return
        names = list(getattr(pl_module, "class_names", [str(i) for i in range(pl_module.num_classes)]))
        step = trainer.global_step
        if self._samples:
            images = torch.cat([s[0] for s in self._samples])
            preds = torch.cat([s[1] for s in self._samples])
            targets = torch.cat([s[2] for s in self._samples])
            captions = [
                f"pred: {names[p]} / true: {names[t]}"
                for p, t in zip(preds.tolist(), targets.tolist(), strict=True)
            ]
            # uint8 HWC arrays: unambiguous for wandb.Image (float CHW tensors get rescaled by guesswork)
            arrays = list((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
            logger.log_image("val/samples", arrays, step=step, caption=captions)
        confusion = values["confusion"]
        if self.confusion_matrix:
            import matplotlib.pyplot as plt

            fig = confusion_matrix_figure(confusion, names)
            logger.log_image("val/confusion_matrix", [fig], step=step)
            plt.close(fig)
        if self._gradcam_images and trainer.is_global_zero:
            self._log_gradcam(pl_module, logger, names, step)
        if self.per_class_table:
            support = confusion.sum(1).tolist()
            rows = [
                [
                    names[i],
                    float(values["precision"][i]),
                    float(values["recall"][i]),
                    float(values["f1"][i]),
                    support[i],
                ]
                for i in range(len(names))
            ]
            logger.log_table(
                "val/per_class",
                columns=["class", "precision", "recall", "f1", "support"],
                data=rows,
                step=step,
            )

    def _log_gradcam(
        self, pl_module: L.LightningModule, logger: WandbLogger, names: list[str], step: int
    ) -> None:
        """Heatmaps of the held validation images with the weights just validated, as overlays."""
        # Validation hooks run under inference mode: Grad-CAM needs autograd, and the held images were made
        # in inference mode, so they are cloned outside it. The model is in eval mode (BN statistics fixed).
        # Grad-CAM backpropagates into the weights' .grad: put back what training left there (accumulating
        # gradients across a mid-epoch validation must not pick these up).
        params = list(pl_module.parameters())
        grads = [p.grad for p in params]
        try:
            with torch.inference_mode(False), torch.enable_grad():
                images = torch.cat(self._gradcam_images).clone()
                maps, classes = heatmaps(
                    pl_module, images, self.gradcam_method, target_layer=self.gradcam_layer
                )
        finally:
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
        pictures = [overlay(img, heat) for img, heat in zip(images.cpu(), maps.float().cpu(), strict=True)]
        captions = [f"{self.gradcam_method}: {names[c]}" for c in classes.tolist()]
        logger.log_image("val/gradcam", pictures, step=step, caption=captions)
        self._gradcam_images = []
