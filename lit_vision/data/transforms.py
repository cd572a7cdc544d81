"""Batched tensor augmentation, run on the device after the batch is transferred.

Instead of per-sample PIL/NumPy transforms in DataLoader workers, whole uint8 batches are augmented at once
with tensor ops (the approach of Keller Jordan's airbench): random crop with reflect padding, horizontal
flip, optional Cutout (DeVries & Taylor, 2017), then per-channel normalization. Each op is a handful of
kernels for the whole batch, on CPU or GPU alike. The policies of ``lit_vision.data.policies`` (RandAugment,
TrivialAugmentWide, colour jitter, random erasing) plug in here the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_vision.data.normalization import affine
from lit_vision.data.policies import (
    batch_color_jitter,
    batch_random_erasing,
    rand_augment,
    trivial_augment_wide,
)

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
        policy: ``randaugment`` or ``trivialaugment`` (TrivialAugmentWide), per image, after crop and flip;
            ``none``: off.
        num_ops: RandAugment's operations per image.
        magnitude: RandAugment's magnitude bin (0..30; torchvision's default 9).
        color_jitter: brightness, contrast and saturation factors drawn per image from ``[1 - s, 1 + s]``;
            0 disables.
        random_erasing: probability per image of erasing one random rectangle (set to the mean); 0 disables.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 4,
        hflip: bool = True,
        cutout: int = 0,
        channels_last: bool = False,
        policy: Literal["none", "randaugment", "trivialaugment"] = "none",
        num_ops: int = 2,
        magnitude: int = 9,
        color_jitter: float = 0.0,
        random_erasing: float = 0.0,
    ) -> None:
        super().__init__()
        if policy not in ("none", "randaugment", "trivialaugment"):
            raise ValueError(f"policy must be none, randaugment or trivialaugment, got {policy!r}")
        if num_ops < 1 or not 0 <= magnitude <= 30 or color_jitter < 0 or not 0 <= random_erasing <= 1:
            raise ValueError(
                "Need num_ops >= 1, 0 <= magnitude <= 30, color_jitter >= 0, 0 <= random_erasing <= 1; got "
                f"{num_ops}, {magnitude}, {color_jitter}, {random_erasing}"
            )
        self.policy, self.num_ops, self.magnitude = policy, num_ops, magnitude
        self.color_jitter, self.random_erasing = color_jitter, random_erasing
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

    @property
    def pixel_ops(self) -> bool:
        """Whether training uses operations defined on [0, 255] pixels (the policies, colour jitter)."""
        return self.policy != "none" or self.color_jitter > 0

    def forward(self, x: Tensor, train: bool = False, flip: Tensor | None = None) -> Tensor:
        """``flip``: (N,) bool, which images to flip (alternating flip); ``None``: a coin per image."""
        # Crop and flip only move pixels: before or after normalizing gives the same values. The policies and
        # colour jitter are defined on [0, 255] pixels, so with them normalization comes after.
        in_pixels = train and self.pixel_ops
        x = x.float() if in_pixels else self.normalize(x)
        if train:
            x = batch_random_crop(x, self.crop_padding)
            if flip is not None:
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            elif self.hflip:
                x = batch_hflip(x)
            if in_pixels:
                if self.policy == "randaugment":
                    x = rand_augment(x, self.num_ops, self.magnitude)
                elif self.policy == "trivialaugment":
                    x = trivial_augment_wide(x)
                if self.color_jitter > 0:
                    s = self.color_jitter
                    x = batch_color_jitter(x, s, s, s)
                x = self.normalize(x)
            x = batch_cutout(x, self.cutout)
            if self.random_erasing > 0:
                x = batch_random_erasing(x, self.random_erasing)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)
