"""``trainer.sync_batchnorm`` that keeps what each BatchNorm layer does besides normalizing.

Lightning's ``TorchSyncBatchNorm`` turns every ``_BatchNorm`` subclass into a plain ``nn.SyncBatchNorm``
(torch's ``convert_sync_batchnorm``), and its ``revert`` turns them into plain BatchNorms. That is exact
for torch's own BatchNorm classes, but a subclass that does more in ``forward`` loses it without a word:
timm's ``BatchNormAct2d`` (BatchNorm, dropout and activation in one layer, used by most timm CNNs) would
train with no activation at all. This plugin

* converts timm's norm-act layers with ``timm.layers.convert_sync_batchnorm`` (which keeps the activation);
* refuses, naming the layer, any other BatchNorm subclass with its own ``forward`` (nothing would keep it);
* reverts each layer to the very object it replaced (its class, activation, and the trained tensors), so
  the model tested or saved after ``fit`` is the model that was built.

``lit_vision.cli`` installs it whenever ``trainer.sync_batchnorm`` is on (on CUDA). In Python:
``Trainer(sync_batchnorm=True, plugins=[SyncBatchNorm()])``.
"""

from __future__ import annotations

from lightning.pytorch.plugins import TorchSyncBatchNorm
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lit_vision.models.zoo.layers import own_forward_batchnorms

__all__ = ["SyncBatchNorm"]


def _is_timm_norm_act(module: nn.Module) -> bool:
    # by name: timm is an optional dependency, and only a model built with it can hold one
    return any(
        cls.__name__ == "BatchNormAct2d" and cls.__module__.startswith("timm.")
        for cls in type(module).__mro__
    )


class SyncBatchNorm(TorchSyncBatchNorm):
    """Lightning's ``TorchSyncBatchNorm`` that keeps timm's norm-act layers, refuses other BatchNorm
    subclasses it would break, and puts the original layers back on ``revert``."""

    def __init__(self) -> None:
        self._originals: dict[str, nn.Module] = {}

    def apply(self, model: nn.Module) -> nn.Module:
        own = own_forward_batchnorms(model)
        unknown = {name: cls for name, cls in own.items() if not _is_timm_norm_act(model.get_submodule(name))}
        if unknown:
            name, cls = next(iter(unknown.items()))
            raise ValueError(
                f"trainer.sync_batchnorm: layer {name!r} is a {cls.__module__}.{cls.__qualname__}, a "
                f"BatchNorm subclass with its own forward ({len(unknown)} such layers in all). SyncBatchNorm "
                "would replace it by a plain BatchNorm and drop what that forward adds. Set "
                "trainer.sync_batchnorm: false (each process then keeps its own BatchNorm statistics)."
            )
        self._originals = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm) and name}
        if own:  # timm's norm-act layers (timm is installed: the model holds some)
            from timm.layers import convert_sync_batchnorm

            return convert_sync_batchnorm(model)
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        for name, original in self._originals.items():
            synced = model.get_submodule(name)
            if not isinstance(synced, nn.SyncBatchNorm):
                continue
            # the synced layer's tensors are the trained ones (and on the training device)
            for key, param in synced.named_parameters(recurse=False):
                setattr(original, key, param)
            for key, buffer in synced.named_buffers(recurse=False):
                setattr(original, key, buffer)
            original.train(synced.training)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, original)
        self._originals = {}
        return model
