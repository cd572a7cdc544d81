"""In-memory datasets over decoded uint8 images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["TensorImageDataset", "passthrough_collate"]


class TensorImageDataset(Dataset):
    """A view (``indices``) of a decoded split, fetched a whole batch at a time.

    ``__getitems__`` (used by ``DataLoader`` when present) gathers a batch with one tensor index instead of
    ``batch_size`` Python calls; with no per-sample ``transform`` no Python runs per image at all.

    Args:
        images: (N, 3, H, W) uint8.
        targets: (N,) int64.
        indices: the samples of this view (default: all).
        transform: optional per-sample callable on a (3, H, W) uint8 tensor (the albumentations path).
        return_index: also return each sample's index into ``images`` (for prediction writers).
        gather: return the images; ``False`` returns their indices into ``images`` in their place, (B,)
            int64, for a datamodule that keeps ``images`` on the device and gathers there.
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        indices: Tensor | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
        return_index: bool = False,
        gather: bool = True,
    ) -> None:
        if not gather and transform is not None:
            raise ValueError("A per-sample transform needs the images: gather=False cannot apply one.")
        self.images = images
        self.targets = targets
        self.indices = torch.arange(len(targets)) if indices is None else indices
        self.transform = transform
        self.return_index = return_index
        self.gather = gather

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([i]))  # one sample: (3, H, W), (), ()

    def __getitems__(self, batch: Sequence[int]) -> tuple[Tensor, ...]:
        idx = self.indices[torch.as_tensor(batch, dtype=torch.long)]
        if not self.gather:
            out = (idx, self.targets[idx])  # the images' indices stand in for them
            return (*out, idx) if self.return_index else out
        images = self.images[idx]  # (B, 3, H, W) uint8
        if self.transform is not None:
            images = torch.stack([self.transform(img) for img in images])
        out: tuple[Tensor, ...] = (images, self.targets[idx])
        return (*out, idx) if self.return_index else out


def passthrough_collate(batch: Any) -> Any:
    """``__getitems__`` already returns a collated batch; the DataLoader's collate must leave it alone."""
    return batch
