"""Freeze the pretrained backbone, train the new head, then unfreeze (Lightning's ``BackboneFinetuning``).

Lightning's callback freezes ``pl_module.backbone`` whole; our backbones contain their classifier head, so
this subclass keeps the head trainable from the start. At ``unfreeze_backbone_at_epoch`` the rest joins the
optimizer as a new parameter group at ``lr / backbone_initial_ratio_lr`` (then multiplied by
``lambda_func(epoch)`` every epoch), as in Lightning. LR schedulers that keep per-group state from their
construction (OneCycleLR) do not know the new group: use none or a per-epoch scheduler.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BackboneFinetuning

from lit_vision.models.finetune import classifier_head

__all__ = ["HeadFirstFinetuning"]


class HeadFirstFinetuning(BackboneFinetuning):
    """``BackboneFinetuning`` for backbones that include their head. Takes the same arguments:
    ``unfreeze_backbone_at_epoch`` (default 10), ``backbone_initial_ratio_lr`` (0.1), ``train_bn`` (True)...
    """

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=self.train_bn)
        self.make_trainable(classifier_head(pl_module.backbone))
