"""Metrics that never read a device value on the host: a running mean and accuracy.

torchmetrics' ``MeanMetric.update`` turns a Python weight into a device tensor (a host-to-device copy) and
checks value and weight for NaN with ``if tensor.any()`` (a device read): three host syncs per call, every
training step and every evaluation batch. On a GPU each one stalls the host until the queued kernels finish,
so Lightning's per-step Python no longer overlaps with the device's work. Its accuracy validates its inputs
the same way, by reading the targets' range on the host every batch.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["DeviceMean", "accuracy"]


def accuracy(num_classes: int, top_k: int = 1) -> MulticlassAccuracy:
    """Top-``top_k`` accuracy over every sample (``micro``), without torchmetrics' input validation: it reads
    the targets' range on the host every batch (a GPU sync, and a few ms per step on CPU); the loss has
    already checked the targets (a bad label fails there)."""
    return MulticlassAccuracy(num_classes, top_k=top_k, average="micro", validate_args=False)


class DeviceMean(MeanMetric):
    """``MeanMetric`` updated without host syncs: the weight is a Python number (a sample count), and NaNs
    are not checked (they propagate into the mean, which is what a NaN loss should do to its epoch mean).
    Distributed reduction, ``compute``, ``reset`` and logging are ``MeanMetric``'s."""

    def update(self, value: Tensor, weight: float = 1.0) -> None:  # type: ignore[override]
        """``value``: a tensor on the metric's device (its mean over elements counts with ``weight`` each)."""
        value = value.detach()
        self.mean_value += value.sum().to(self.mean_value.dtype) * weight
        self.weight += value.numel() * weight  # a Python number added on the device: no copy, no sync
