"""Freeze the pretrained backbone, train the new head, then unfreeze (Lightning's ``BackboneFinetuning``).

Lightning's callback freezes ``pl_module.backbone`` whole; our backbones contain their classifier head, so
this subclass keeps the head trainable from the start. At ``unfreeze_backbone_at_epoch`` the rest joins the
optimizer as a new parameter group at ``lr / backbone_initial_ratio_lr`` (then multiplied by
``lambda_func(epoch)`` every epoch), as in Lightning. LR schedulers that keep per-group state from their
construction (OneCycleLR) do not know the new group: use none or a per-epoch scheduler.

Two things Lightning's callback gets wrong, fixed here:

* **DDP.** The backbone is frozen in ``setup``, before DDP wraps the model, and DDP only ever reduces the
  gradients of the parameters that required them when it was built. After unfreezing, each process would
  train its own backbone on its own shard and the copies would drift apart silently. This callback averages
  those gradients across processes itself, right after each backward (before AMP unscaling, clipping and
  the optimizer step, so every process steps with the same gradients, and finds the same inf/NaN).
* **Resume after the unfreeze epoch.** ``setup`` freezes again and Lightning restores the backbone's
  parameter group, but nothing turned ``requires_grad`` back on: the backbone stayed frozen for the rest of
  the run. Every parameter in a restored group is made trainable again.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import BackboneFinetuning
from torch.nn.parallel import DistributedDataParallel

from lit_vision.models.training.pretrained import classifier_head

__all__ = ["HeadFirstFinetuning"]


class HeadFirstFinetuning(BackboneFinetuning):
    """``BackboneFinetuning`` for backbones that include their head. Takes the same arguments:
    ``unfreeze_backbone_at_epoch`` (default 10), ``backbone_initial_ratio_lr`` (0.1), ``train_bn`` (True)...
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # parameters DDP was built without (frozen when it wrapped the model): their gradients are ours to
        # average once they train
        self._outside_ddp: list[torch.nn.Parameter] = []

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=self.train_bn)
        self.make_trainable(classifier_head(pl_module.backbone))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the strategy wrapped the model and before the parent restores unfrozen groups.
        wrapped = isinstance(trainer.strategy.model, DistributedDataParallel)
        self._outside_ddp = (
            [p for p in pl_module.parameters() if not p.requires_grad]
            if wrapped and trainer.world_size > 1
            else []
        )
        super().on_fit_start(trainer, pl_module)
        for optimizer in trainer.optimizers:  # resumed past the unfreeze epoch: the restored groups train
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.requires_grad_(True)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every process unfreezes at the same epoch, so all of them send the same list of tensors.
        params = [p for p in self._outside_ddp if p.requires_grad]
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in grads]), reduce_op="mean")
        for param, averaged in zip(params, flat.split([p.numel() for p in params]), strict=True):
            param.grad = averaged.view_as(param)
