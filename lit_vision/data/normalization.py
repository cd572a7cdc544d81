"""The normalization contract: the one place that turns pixels into model inputs and back.

Every model input is ``(x / scale - mean) / std`` per channel, where ``x`` is in ``scale`` units (255 for
uint8 batches, 1 for [0, 1] floats) and ``mean``/``std`` are the training images' channel statistics in
[0, 1] units. The datamodule computes them (``ImageDataModule.mean``/``std``), ``ImageClassifier`` stores
them in its checkpoints (``input_mean``/``input_std`` buffers), and the batched transforms, export, FGSM and
the W&B images all go through the functions below, so the arithmetic cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["affine", "denormalize", "normalize", "pixel_bounds", "pixels_to_units"]


def _channels(values: Sequence[float] | Tensor, like: Tensor | None = None) -> Tensor:
    """(C,) values -> a (1, C, 1, 1) float32 tensor (on ``like``'s device)."""
    t = torch.as_tensor(values, dtype=torch.float32, device=None if like is None else like.device)
    return t.reshape(1, -1, 1, 1)


def affine(
    mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``(a, b)`` of shape (1, C, 1, 1) with ``normalize(x) == x * a + b`` for ``x`` in ``scale`` units: one
    fused multiply-add (``torch.addcmul(b, x, a)``) per element, and a constant in exported graphs."""
    mean_t, std_t = _channels(mean), _channels(std)
    return 1.0 / (scale * std_t), -mean_t / std_t


def normalize(
    x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, scale: float = 1.0
) -> Tensor:
    """Images (N, C, H, W) in ``scale`` units -> the float32 model input."""
    a, b = affine(mean, std, scale)
    return torch.addcmul(b.to(x.device), x.float(), a.to(x.device))


def denormalize(z: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Model inputs (N, C, H, W) -> images in [0, 1] units (not clamped)."""
    return torch.addcmul(_channels(mean, z), z.float(), _channels(std, z))


def pixel_bounds(mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
    """The [0, 1] pixel range in model-input units: ``(lo, hi)``, each (1, C, 1, 1)."""
    mean_t, std_t = _channels(mean), _channels(std)
    return -mean_t / std_t, (1.0 - mean_t) / std_t


def pixels_to_units(amount: float, std: Sequence[float] | Tensor) -> Tensor:
    """A step of ``amount`` in [0, 1] pixel units, in model-input units per channel (1, C, 1, 1)."""
    return amount / _channels(std)
