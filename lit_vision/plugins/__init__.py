"""Lightning plugins: how the Trainer handles layers across processes (``SyncBatchNorm``)."""

from lit_vision.plugins.sync_batchnorm import SyncBatchNorm

__all__ = ["SyncBatchNorm"]
