"""The training augmentation a datamodule's settings describe, built in one place: for the datamodule itself,
and for showing it (``python -m lit_vision.augment_preview``, the report's ``augmented.png``), so a preview
is exactly what the run trains with.

``hparams`` is the datamodule's ``hparams`` (what its ``__init__`` received; checkpoints keep it as
``datamodule_hyper_parameters``). Settings a checkpoint from an older version lacks take the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lit_vision.data.albumentations_pipeline import AlbumentationsTransform
from lit_vision.data.normalization import denormalize
from lit_vision.data.torchvision_pipeline import TorchvisionTransform
from lit_vision.data.transforms import BatchAugment

__all__ = ["augmented_views", "build_batch_augment", "build_sample_transform"]


def build_batch_augment(
    hparams: Mapping[str, Any], mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> BatchAugment:
    """The batched transform: normalization, and on the ``batched`` path crop/flip/Cutout and the policies."""
    return BatchAugment(
        mean,
        std,
        crop_padding=hparams.get("crop_padding", 4),
        hflip=hparams.get("hflip", True),
        cutout=hparams.get("cutout", 0),
        channels_last=hparams.get("channels_last", False),
        policy=hparams.get("policy", "none"),
        num_ops=hparams.get("num_ops", 2),
        magnitude=hparams.get("magnitude", 9),
        color_jitter=hparams.get("color_jitter", 0.0),
        random_erasing=hparams.get("random_erasing", 0.0),
    )


def build_sample_transform(
    hparams: Mapping[str, Any],
) -> AlbumentationsTransform | TorchvisionTransform | None:
    """The per-sample pipeline of the ``albumentations`` / ``torchvision`` paths (``None`` when batched)."""
    augment = hparams.get("augment", "batched")
    if augment == "albumentations":
        return AlbumentationsTransform(hparams["albumentations"])
    if augment == "torchvision":
        return TorchvisionTransform(hparams["torchvision"])
    return None


def augmented_views(
    images: Tensor,
    hparams: Mapping[str, Any],
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    epoch: int = 0,
) -> Tensor:
    """uint8 images (N, 3, H, W) -> one training draw of each, as uint8 pixels for display. The per-sample
    pipeline runs image by image, as the loader's workers do; the batched one on the batch. The alternating
    flip's phase per image is a function of the run's seed in training: here it is drawn at random, and
    ``epoch`` sets the parity."""
    sample = build_sample_transform(hparams)
    if sample is not None:
        return torch.stack([sample(image) for image in images])
    augment = build_batch_augment(hparams, mean, std)
    flip = None
    if hparams.get("alternating_flip", False) and hparams.get("hflip", True):
        flip = (torch.rand(len(images)) < 0.5) ^ bool(epoch % 2)
    x = augment(images, train=True, flip=flip)
    return (denormalize(x, mean, std).clamp(0, 1) * 255).round().to(torch.uint8)
