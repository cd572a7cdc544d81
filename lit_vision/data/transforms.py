"""Batched tensor augmentation, run on the device after the batch is transferred.

Instead of per-sample PIL/NumPy transforms in DataLoader workers, whole uint8 batches are augmented at once
with tensor ops (the approach of Keller Jordan's airbench): random crop with reflect padding, horizontal
flip, optional Cutout (DeVries & Taylor, 2017), then per-channel normalization. Each op is a handful of
kernels for the whole batch, on CPU or GPU alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_vision.data.normalization import affine

__all__ = ["BatchAugment", "batch_cutout", "batch_hflip", "batch_random_crop"]


def batch_random_crop(x: Tensor, padding: int) -> Tensor:
    """Per-sample random translation by up to ``padding`` px with reflect padding; output size = input size.

    Args:
        x: float images (N, C, H, W).
        padding: maximal shift in pixels (the crop of a ``padding``-padded image, as in the CIFAR recipe).
    """
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding), mode="reflect")  # (N, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
    rows = dy + torch.arange(h, device=x.device).view(1, h, 1)  # (N, H, 1)
    cols = dx + torch.arange(w, device=x.device).view(1, 1, w)  # (N, 1, W)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    # Advanced indexing on the NHWC view gathers every sample's window in one kernel: (N, H, W, C).
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def batch_hflip(x: Tensor, p: float = 0.5) -> Tensor:
    """Flip each image horizontally with probability ``p``."""
    flip = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def batch_cutout(x: Tensor, size: int, fill: float = 0.0) -> Tensor:
    """Fill one ``size`` x ``size`` square per image (centre uniform over the image, clipped at borders)."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    half = size // 2
    inside = (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    return x.masked_fill(inside.unsqueeze(1), fill)  # (N, 1, H, W) mask broadcast over channels


class BatchAugment(nn.Module):
    """uint8 batch (N, 3, H, W) -> normalized float batch, augmented when ``train`` is true.

    Args:
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.
        crop_padding: random-crop shift in pixels (0 disables).
        hflip: random horizontal flip with probability 0.5.
        cutout: side of the Cutout square in pixels (0 disables); filled with the mean (0 after normalizing).
        channels_last: return the batch in channels-last memory format (faster convs on CPU and tensor cores).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 4,
        hflip: bool = True,
        cutout: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # x_norm = (x / 255 - mean) / std = x * scale + shift: one fused multiply-add on the float batch.
        scale, shift = affine(mean, std, 255.0)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.cutout = cutout
        self.channels_last = channels_last

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 or [0, 255] float images -> normalized float32."""
        if self.scale.device != x.device:
            # The module lives in the datamodule, which Lightning never moves: move the constants once, on the
            # first batch, instead of copying them host -> device with every batch (a host sync each on CUDA).
            self.to(x.device)
        return torch.addcmul(self.shift, x.float(), self.scale)

    def forward(self, x: Tensor, train: bool = False, flip: Tensor | None = None) -> Tensor:
        """``flip``: (N,) bool, which images to flip (alternating flip); ``None``: a coin per image."""
        x = self.normalize(x)
        if train:
            x = batch_random_crop(x, self.crop_padding)
            if flip is not None:
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            elif self.hflip:
                x = batch_hflip(x)
            x = batch_cutout(x, self.cutout)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)
