"""Refusals of ``trainer.sync_batchnorm`` combinations that would train wrong or slowly (checked when fit
starts, after the strategy converted the model)."""

from __future__ import annotations

from torch import nn

from lit_vision.errors import ConfigError

__all__ = ["check_sync_batchnorm"]


def check_sync_batchnorm(backbone: nn.Module, compiled: bool, own_forward_bns: dict[str, type]) -> None:
    """``trainer.sync_batchnorm`` combinations that would train wrong or slowly, refused with a reason.
    ``own_forward_bns``: the backbone's BatchNorm subclasses whose forward does more than normalize, by name,
    recorded before the strategy converted the model (``layers.own_forward_batchnorms``)."""
    synced = [name for name, m in backbone.named_modules() if isinstance(m, nn.SyncBatchNorm)]
    if not synced:
        return
    if compiled:
        # pytorch/pytorch#161302: dynamo cannot trace SyncBatchNorm's collective, so the graph breaks at
        # every BatchNorm (and some versions fail to compile it at all, #107372)
        raise ConfigError(
            "model.compile with trainer.sync_batchnorm: torch.compile cannot trace SyncBatchNorm and "
            f"would split the backbone's graph at each of its {len(synced)} BatchNorm layers. Turn one "
            "off: trainer.sync_batchnorm: false (per-process BatchNorm statistics, fine at per-GPU "
            "batches of 32 and more) or model.compile: false."
        )
    dropped = [n for n in own_forward_bns if type(backbone.get_submodule(n)) is nn.SyncBatchNorm]
    if dropped:
        cls = own_forward_bns[dropped[0]]
        raise ConfigError(
            f"trainer.sync_batchnorm turned backbone.{dropped[0]} (a {cls.__qualname__}, whose forward "
            "does more than normalize, e.g. timm's BatchNorm + activation) into a plain SyncBatchNorm: "
            "it would train without what its forward adds. Use lit_vision's plugin, which keeps it: "
            "Trainer(sync_batchnorm=True, plugins=[lit_vision.plugins.SyncBatchNorm()]) (train.py "
            "does this)."
        )
