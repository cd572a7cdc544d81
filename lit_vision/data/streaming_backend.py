"""The streaming back-end (``data.backend: streaming``): litdata shards, decoded per sample in the workers.

The shards (written by ``python -m lit_vision.data.shards``) fix the classes, the train/val split and the
channel statistics in their ``meta.json``; this back-end checks that they match the datamodule's settings
and builds litdata's loaders over them (``lit_vision.data.streaming``). Importing this module imports
litdata (an optional extra): the datamodule imports it only when ``backend: streaming`` is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lit_vision.data.backend import (
    KNOWN_NUM_CLASSES,
    ChannelStats,
    DataBackend,
    LoaderRequest,
    SplitTensors,
    check_batch_fits,
)
from lit_vision.data.sources import DatasetError
from lit_vision.data.streaming import ShardStore, make_streaming_loader

__all__ = ["StreamingBackend"]


class StreamingBackend(DataBackend):
    """litdata shards at a folder or a URL: the datamodule's ``backend: streaming``.

    Everything but the loaders reads the shards' ``meta.json``, so classes, statistics and ``input_size``
    hold before ``setup``. It holds no decoded set: ``split()`` and ``device_resident`` are refused.

    Args:
        dataset: ``cifar10``, ``cifar100`` or ``imagefolder`` (the class count is checked for the first two).
        data_dir: the shard folder, or its URL (``s3://bucket/cifar10``), as the user wrote it.
        cache_dir: where a remote store's ``meta.json`` and chunks are downloaded.
        image_size: decode size (resize + centre crop), ``None``: the images' own size.
        val_size: must equal the conversion's (the shards fix the split).
        seed: must equal the conversion's.
    """

    decodes_per_sample = True

    def __init__(
        self,
        dataset: str,
        data_dir: str,
        cache_dir: Path,
        image_size: int | None,
        val_size: int | float,
        seed: int,
    ) -> None:
        self.dataset = dataset
        self.image_size = image_size
        self.val_size = val_size
        self.seed = seed
        self.store = ShardStore(data_dir, cache_dir)

    def __repr__(self) -> str:
        return f"StreamingBackend({self.dataset!r}, {self.store.root!r})"

    @property
    def classes(self) -> list[str]:
        return list(self.store.meta["classes"])

    @property
    def has_test_split(self) -> bool:
        return self.store.has("test")

    def has_split(self, name: Literal["val", "test"]) -> bool:
        return self.store.has(name)

    def prepare(self) -> None:
        """Check the shards: complete, of this project's format, every local shard file whole."""
        for split in ("train", "val", "test"):
            if self.store.has(split):
                self.store.split_dir(split)

    def setup(self, stage: str | None, batch_size: int) -> ChannelStats:
        """Check the shards' split and class count against the settings; the statistics are the
        conversion's."""
        meta = self.store.meta
        if (meta["val_size"], meta["seed"]) != (self.val_size, self.seed):
            raise DatasetError(
                f"The shards at {self.store.root} hold the split val_size={meta['val_size']}, "
                f"seed={meta['seed']}, but data.val_size={self.val_size}, data.seed={self.seed}: set those, "
                "or convert again with --val-size/--seed (python -m lit_vision.data.shards)."
            )
        expected = KNOWN_NUM_CLASSES.get(self.dataset)
        if expected is not None and len(meta["classes"]) != expected:
            raise DatasetError(
                f"The shards at {self.store.root} have {len(meta['classes'])} classes, but {self.dataset} "
                f"has {expected}. Use dataset: imagefolder for other datasets."
            )
        check_batch_fits(meta["counts"]["train"], batch_size, stage)
        return tuple(meta["mean"]), tuple(meta["std"])  # type: ignore[return-value]

    @property
    def source_train_size(self) -> int:
        return int(self.store.meta["source_train_size"])

    @property
    def input_size(self) -> int:
        return self.image_size or int(self.store.meta["shape"][-1])

    def train_images(self, count: int | None) -> Tensor:
        # the train shards are stored in splits.training_order: the first ones are the memory back-end's
        return self.store.read("train", count or self.store.meta["counts"]["train"], self.image_size)

    def split(self, name: Literal["train", "val", "test"]) -> SplitTensors:
        raise RuntimeError("split() reads the decoded tensors of backend: memory; streaming holds none.")

    def paths(self, source: Literal["train", "test"]) -> list[str]:
        return self.store.paths(source)

    def resident_images(self, source: Literal["train", "test"], device: torch.device) -> Tensor:
        raise RuntimeError("device_resident needs backend: memory (streaming never holds the whole set).")

    def check_ready(self) -> None:
        """Nothing to wait for: the loaders read the shards themselves."""

    def loader(self, request: LoaderRequest) -> DataLoader:
        """litdata's loader over the split's shards (``streaming.make_streaming_loader``): sharded by rank and
        worker, resumable mid-epoch through Lightning's checkpoint."""
        return make_streaming_loader(
            self.store,
            request.split,
            batch_size=request.batch_size,
            train=request.train,
            image_size=self.image_size,
            seed=request.seed,
            num_workers=request.num_workers,
            transform=request.transform,
            return_index=request.return_index,
            pin_memory=request.pin_memory,
        )
