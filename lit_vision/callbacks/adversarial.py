"""FGSM adversarial training and robust test accuracy.

Fast Gradient Sign Method (Goodfellow et al., 2015, arXiv:1412.6572): ``x_adv = x + eps * sign(grad_x L)``,
clipped to the valid pixel range. "Fast is better than free" (Wong et al., 2020, arXiv:2001.03994) shows
FGSM training is a cheap and effective robustness baseline.

``eps`` is given in pixel units ([0, 1] images, e.g. 8/255) and converted per channel through the
normalization std, because the model sees normalized inputs. The gradient is taken with
``torch.autograd.grad`` w.r.t. the input only: parameter ``.grad`` and DDP's reducer (whose hooks fire on
gradient accumulation into parameters) never see the crafting pass. BatchNorm running statistics are saved
before the crafting forward and restored after it, so the attack does not pollute them.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_vision.data.normalization import pixel_bounds, pixels_to_units
from lit_vision.errors import ConfigError
from lit_vision.lightning_workarounds import attached_trainer

__all__ = ["FGSM", "fgsm_perturb"]


def _bn_buffers(module: nn.Module) -> list[Tensor]:
    return [
        b
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase)
        for b in (m.running_mean, m.running_var, m.num_batches_tracked)
        if b is not None
    ]


def fgsm_perturb(
    module: L.LightningModule,
    x: Tensor,
    y: Tensor,
    eps: float,
    loss_scale: float | None = None,
) -> Tensor:
    """One FGSM step on a normalized batch.

    Args:
        module: an ``ImageClassifier`` (its ``criterion``, ``input_mean`` and ``input_std`` are used).
        x: normalized images (N, 3, H, W).
        y: labels (N,) or soft targets (N, K).
        eps: L-inf radius in pixel units ([0, 1] scale).
        loss_scale: multiply the loss before differentiating (fp16 autocast: keeps small input gradients
            from underflowing to zero; only the sign is used, so the scale does not matter otherwise).

    Returns:
        ``x_adv`` (N, 3, H, W), detached, with ``|x_adv - x| <= eps`` in pixel space and pixels in [0, 1].
    """
    lo, hi = (b.to(x.device) for b in pixel_bounds(module.input_mean, module.input_std))
    bn = _bn_buffers(module)
    saved = [b.clone() for b in bn]
    # Test and predict run under inference_mode; the attack needs a graph back to the input.
    with torch.inference_mode(False), torch.enable_grad():
        x_in = x.detach().clone().requires_grad_(True)
        loss = module.criterion(module(x_in), y.clone())
        if loss_scale is not None:
            loss = loss * loss_scale
        (grad,) = torch.autograd.grad(loss, x_in)  # w.r.t. the input only: parameter grads untouched
    with torch.no_grad():
        for b, s in zip(bn, saved, strict=True):
            b.copy_(s)
        # A loss scaled past fp16's range gives inf/NaN gradients: those pixels take no step (no host check,
        # which would be a GPU sync per batch; the GradScaler backs off on its own step).
        direction = torch.nan_to_num(grad.float().sign(), nan=0.0)
        step = pixels_to_units(eps, module.input_std).to(x.device) * direction
        x_adv = torch.minimum(torch.maximum(x.float() + step, lo), hi).to(x.dtype)
    return x_adv.detach()


class FGSM(L.Callback):
    """FGSM adversarial examples during training, and optionally robust accuracy in ``test``.

    Args:
        eps: training attack radius in pixel units (the [0, 1] scale), e.g. 0.0313725 (8/255).
        adv_every: attack every k-th training batch (1: every batch).
        mode: ``replace``: train on the adversarial batch instead of the clean one; ``append``: train on
            both (the batch doubles).
        test_eps: if set, ``test`` also logs ``test/adv_acc``: accuracy on FGSM examples of this radius
            (pixel units), crafted against the model under test.
        fp32_craft: craft with autocast disabled (slower, exact). By default the crafting pass runs in the
            training precision and, under ``16-mixed``, its loss is multiplied by the grad scaler's scale so
            the input gradient does not underflow.
    """

    def __init__(
        self,
        eps: float = 8 / 255,
        adv_every: int = 1,
        mode: Literal["replace", "append"] = "replace",
        test_eps: float | None = None,
        fp32_craft: bool = False,
    ) -> None:
        # Refused here, when the CLI builds the callback, before any data is loaded. A radius above 1 is a
        # radius in 0..255 pixel steps (8 for 8/255): it would push every pixel to 0 or 1.
        for name, radius in (("eps", eps), ("test_eps", test_eps)):
            if radius is not None and not 0.0 <= radius <= 1.0:
                raise ConfigError(
                    f"--fgsm.init_args.{name} is a radius in pixel units in [0, 1] (8/255 is 0.0313725), "
                    f"got {radius}."
                )
        if not adv_every >= 1:
            raise ConfigError(f"--fgsm.init_args.adv_every must be >= 1 (1: every batch), got {adv_every}.")
        if mode not in ("replace", "append"):
            raise ConfigError(f"--fgsm.init_args.mode must be replace or append, got {mode!r}.")
        self.eps, self.adv_every, self.mode = eps, adv_every, mode
        self.test_eps, self.fp32_craft = test_eps, fp32_craft
        self._scale: float | None = None  # 16-mixed loss scale, refreshed once per epoch
        self._scale_epoch: int | None = None
        self._adv_acc: MulticlassAccuracy | None = None

    # ------------------------------------------------------------------ wiring
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            if not hasattr(pl_module, "add_train_batch_transform"):
                raise TypeError("FGSM needs a lit_vision ImageClassifier (add_train_batch_transform).")
            pl_module.add_train_batch_transform(self._transform, order=10)  # after MixUp/CutMix

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and hasattr(pl_module, "remove_train_batch_transform"):
            pl_module.remove_train_batch_transform(self._transform)

    def craft(self, module: L.LightningModule, x: Tensor, y: Tensor, eps: float) -> Tensor:
        """FGSM examples of radius ``eps`` (pixels) in the trainer's precision (see ``fp32_craft``)."""
        if self.fp32_craft:
            with torch.autocast(x.device.type, enabled=False):
                return fgsm_perturb(module, x.float(), y, eps)
        return fgsm_perturb(module, x, y, eps, loss_scale=self._loss_scale(module))

    def _loss_scale(self, module: L.LightningModule) -> float | None:
        """16-mixed: the GradScaler's scale, read on the host once per epoch (``get_scale()`` is a device
        read, a GPU sync, so not once per batch). Other precisions: ``None``."""
        # the module's own Trainer reference: one kept here would be copied with EMA's copy of the module
        trainer = attached_trainer(module)
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
        if scaler is None or not scaler.is_enabled():
            return None
        epoch = trainer.current_epoch if trainer is not None else -1
        if self._scale_epoch != epoch:
            self._scale, self._scale_epoch = float(scaler.get_scale()), epoch
        return self._scale

    def _transform(
        self, module: L.LightningModule, x: Tensor, y: Tensor, batch_idx: int
    ) -> tuple[Tensor, Tensor]:
        if batch_idx % self.adv_every != 0 or self.eps == 0:
            return x, y
        x_adv = self.craft(module, x, y, self.eps)
        if self.mode == "replace":
            return x_adv, y
        return torch.cat([x, x_adv]), torch.cat([y, y])

    # ------------------------------------------------------------------ robust test accuracy
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.test_eps is not None:
            self._adv_acc = MulticlassAccuracy(pl_module.num_classes, average="micro").to(pl_module.device)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: object,
        batch: tuple[Tensor, ...],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._adv_acc is None:
            return
        x, y = batch[0], batch[1]
        x_adv = self.craft(pl_module, x, y, self.test_eps)
        with torch.no_grad():
            self._adv_acc.update(pl_module(x_adv), y)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._adv_acc is None:
            return
        pl_module.log("test/adv_acc", self._adv_acc.compute())  # compute() syncs across DDP ranks
        self._adv_acc = None
