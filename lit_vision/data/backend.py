"""The interface between ``ImageDataModule`` and where its images come from (``data.backend``).

A back-end owns the data: it checks and loads it (``prepare``, ``setup``), knows its classes, statistics and
image size, and builds the loaders of a split. The datamodule owns everything the two back-ends share: the
argument checks, which split ``test``/``predict`` serve, the batched augmentation on the device, and the
Lightning hooks. Two back-ends implement it:

- ``lit_vision.data.memory_backend``: every image decoded once into one uint8 tensor (``backend: memory``).
- ``lit_vision.data.streaming_backend``: litdata shards decoded per sample in workers (``backend:
  streaming``; imported only then, litdata being an optional extra).

What only one of them can do is refused by the other with a message that names the back-end to use
(``split()``, ``device_resident``: memory only).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lit_vision.data.sources import DatasetError

__all__ = [
    "KNOWN_NUM_CLASSES",
    "ChannelStats",
    "DataBackend",
    "LoaderRequest",
    "SplitTensors",
    "check_batch_fits",
]

#: the class count of the datasets known by name (an ImageFolder tree has as many as it has folders)
KNOWN_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}

#: per-channel mean and standard deviation of the training images, in [0, 1] units
ChannelStats = tuple[tuple[float, float, float], tuple[float, float, float]]


class SplitTensors(NamedTuple):
    """A split of the memory back-end: the source file's decoded tensors and the split's positions in them."""

    images: Tensor  # uint8 (N, 3, H, W), every image of the file the split is drawn from
    targets: Tensor  # int64 (N,)
    indices: Tensor  # int64 (n,), the split's images: images[indices]
    paths: list[str]  # source of each of the N images (relative to its split's folder, or dataset:split:i)


@dataclass(frozen=True)
class LoaderRequest:
    """What the datamodule asks of a back-end's loader: the split is already resolved (``test`` and
    ``predict`` name the images they serve), the rest is the same for every back-end.

    Args:
        split: the images served: ``train``, ``val`` or ``test``.
        train: the training loader: shuffled per epoch, the last incomplete batch dropped, ``transform``
            applied.
        predict: the predict loader (Lightning brings its own sampler there).
        batch_size: images per batch.
        num_workers: DataLoader workers.
        seed: the run's seed (the order of each epoch is a function of it and the epoch).
        transform: per-sample pipeline on uint8 (3, H, W) images, or ``None``.
        return_index: batches also carry each image's index in its source split (alternating flip,
            predict).
        pin_memory: page-locked batches (only when the run trains on a CUDA device).
        trainer: the running Trainer, or ``None`` (the memory back-end reads its DDP settings).
    """

    split: Literal["train", "val", "test"]
    train: bool
    predict: bool
    batch_size: int
    num_workers: int
    seed: int
    transform: Callable[[Tensor], Tensor] | None
    return_index: bool
    pin_memory: bool
    trainer: Any | None


def check_batch_fits(n_train: int, batch_size: int, stage: str | None) -> None:
    """Refuse a training batch larger than the train split: the loader drops incomplete batches, so an epoch
    would run no step at all (only when fitting: evaluation keeps every batch)."""
    if n_train < batch_size and stage in (None, "fit"):
        raise DatasetError(
            f"batch_size={batch_size} is larger than the {n_train} training images; the train "
            "loader drops incomplete batches, so no step would run. Lower data.batch_size."
        )


class DataBackend(ABC):
    """Where ``ImageDataModule``'s images come from: one object per datamodule, chosen by ``data.backend``.

    ``classes`` and ``has_test_split`` hold right after construction; the rest after ``setup``, except where
    a back-end says otherwise.
    """

    #: whether the loaders decode each image in the workers (then DataLoader workers pay by default)
    decodes_per_sample: ClassVar[bool]

    @property
    @abstractmethod
    def classes(self) -> list[str]:
        """Class names in label order."""

    @property
    @abstractmethod
    def has_test_split(self) -> bool:
        """Whether the dataset has a test split (known before ``setup``)."""

    @abstractmethod
    def has_split(self, name: Literal["val", "test"]) -> bool:
        """Whether the loaders can serve split ``name`` now (``val``: ``val_size`` held images out)."""

    @abstractmethod
    def prepare(self) -> None:
        """``prepare_data`` (rank 0 only): fetch or check the data, so that ``setup`` on every rank reads it
        whole."""

    @abstractmethod
    def setup(self, stage: str | None, batch_size: int) -> ChannelStats:
        """Load and check the data, refuse a ``batch_size`` larger than the train split when fitting
        (``check_batch_fits``), and return the training images' channel statistics."""

    @property
    @abstractmethod
    def source_train_size(self) -> int:
        """Images of the train split's source (validation included): the range of the indices that
        training batches carry with ``return_index``."""

    @property
    @abstractmethod
    def input_size(self) -> int:
        """Side in pixels of the square images the loaders serve."""

    @abstractmethod
    def train_images(self, count: int | None) -> Tensor:
        """The first ``count`` images (all when ``None``) of the train split in ``splits.training_order``,
        uint8 (N, 3, H, W) on the CPU: the same images on every back-end."""

    @abstractmethod
    def split(self, name: Literal["train", "val", "test"]) -> SplitTensors:
        """The decoded tensors of split ``name`` as the loaders index them (memory back-end only)."""

    @abstractmethod
    def paths(self, source: Literal["train", "test"]) -> list[str]:
        """Source path of every image of a source split (``train`` includes the validation images), indexed
        like the ``index`` of predict batches."""

    @abstractmethod
    def check_ready(self) -> None:
        """Raise when no loader can be built yet (a back-end that needs ``setup`` first)."""

    @abstractmethod
    def loader(self, request: LoaderRequest) -> DataLoader:
        """The loader of ``request.split``: uint8 (B, 3, H, W) images, int64 (B,) targets, and with
        ``return_index`` each image's int64 index in its source split."""

    @abstractmethod
    def resident_images(self, source: Literal["train", "test"], device: torch.device) -> Tensor:
        """``device_resident`` (memory back-end only): every uint8 image of a source split on ``device``,
        copied there once; the loaders then serve indices into it."""
