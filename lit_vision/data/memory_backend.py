"""The memory back-end (``data.backend: memory``, the default): every image decoded once into a uint8 tensor.

CIFAR-10/100 from torchvision's files, or any ImageFolder tree (decoded once, then cached on disk by
``lit_vision.data.sources``). The train/val split is a seeded draw of positions in the train file
(``lit_vision.data.splits``); loaders index the decoded tensor a whole batch at a time
(``lit_vision.data.datasets``), and with ``device_resident`` the tensor itself moves to the accelerator and
the loaders serve indices into it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lit_vision.data.albumentations_pipeline import worker_init_fn
from lit_vision.data.backend import (
    KNOWN_NUM_CLASSES,
    ChannelStats,
    DataBackend,
    LoaderRequest,
    SplitTensors,
    check_batch_fits,
)
from lit_vision.data.cifar_classes import CIFAR10_CLASSES, CIFAR100_CLASSES
from lit_vision.data.datasets import TensorImageDataset, passthrough_collate
from lit_vision.data.loaders import ResumableDataLoader, ResumableSampler, make_sampler
from lit_vision.data.sources import (
    DatasetError,
    DecodedSplit,
    detect_layout,
    download_torchvision_cifar,
    layouts_help,
    list_class_dirs,
    load_imagefolder_split,
    load_torchvision_cifar,
)
from lit_vision.data.splits import channel_stats, seeded_split, training_order

__all__ = ["MemoryBackend"]


class MemoryBackend(DataBackend):
    """Decoded uint8 tensors in RAM (optionally on the accelerator): the datamodule's ``backend: memory``.

    Args:
        dataset: ``cifar10``, ``cifar100`` or ``imagefolder``.
        data_dir: torchvision's CIFAR files or an ImageFolder tree (``train/<class>/*``, optional ``test/``).
        cache_dir: where decoded ImageFolder tensors and statistics are cached.
        image_size: resize + centre-crop ImageFolder images to this square size (``None``: native size).
        val_size: images held out of the train split: a count, a fraction below 1, or 0.
        seed: seed of the train/val split.
        download: ``prepare`` downloads torchvision's CIFAR files when ``data_dir`` holds no data.
        device_resident: loaders serve indices into the images, which ``resident_images`` keeps on the
            device.
    """

    decodes_per_sample = False

    def __init__(
        self,
        dataset: str,
        data_dir: Path,
        cache_dir: Path,
        image_size: int | None,
        val_size: int | float,
        seed: int,
        download: bool,
        device_resident: bool,
    ) -> None:
        self.dataset = dataset
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.image_size = image_size
        self.val_size = val_size
        self.seed = seed
        self.download = download
        self.device_resident = device_resident
        self._train_full: DecodedSplit | None = None
        self._test: DecodedSplit | None = None
        self._train_idx: Tensor | None = None
        self._val_idx: Tensor | None = None
        #: device_resident: the decoded images per (split source, device), moved on first use
        self._resident: dict[tuple[str, torch.device], Tensor] = {}

    def __repr__(self) -> str:
        return f"MemoryBackend({self.dataset!r}, {str(self.data_dir)!r})"

    # ------------------------------------------------------------------ metadata (valid right after __init__)
    @property
    def layout(self) -> str | None:
        """``torchvision`` or ``imagefolder``: what ``data_dir`` holds now (``None``: nothing usable)."""
        return detect_layout(self.dataset, self.data_dir)

    @property
    def classes(self) -> list[str]:
        """Class names in label order: the decoded split's, else the folders' or the dataset's own list."""
        if self._train_full is not None:
            return list(self._train_full.classes)
        if self.layout == "imagefolder":
            return list_class_dirs(self.data_dir / "train")
        if self.dataset == "cifar10":
            return list(CIFAR10_CLASSES)
        if self.dataset == "cifar100":
            return list(CIFAR100_CLASSES)
        raise DatasetError(
            f"No ImageFolder tree at {self.data_dir}.\n{layouts_help(self.dataset, self.data_dir)}"
        )

    @property
    def has_test_split(self) -> bool:
        if self.layout == "torchvision":
            return True
        return (self.data_dir / "test").is_dir()

    def has_split(self, name: Literal["val", "test"]) -> bool:
        if name == "test":
            return self._test is not None
        return self._val_idx is None or len(self._val_idx) > 0

    # ------------------------------------------------------------------ loading
    def prepare(self) -> None:
        """Download torchvision's CIFAR files if needed, and warm the decode cache."""
        if self.layout is None:
            if self.dataset == "imagefolder" or not self.download:
                raise DatasetError(f"No dataset found.\n{layouts_help(self.dataset, self.data_dir)}")
            download_torchvision_cifar(self.dataset, self.data_dir)
        self._load_splits()  # decodes and caches ImageFolder trees once, before other ranks read them

    def _load_splits(self) -> None:
        if self._train_full is not None:
            return
        layout = self.layout
        if layout is None:
            raise DatasetError(f"No dataset found.\n{layouts_help(self.dataset, self.data_dir)}")
        if layout == "torchvision":
            self._train_full = load_torchvision_cifar(self.dataset, self.data_dir, train=True)
            self._test = load_torchvision_cifar(self.dataset, self.data_dir, train=False)
        else:
            self._train_full = load_imagefolder_split(
                self.data_dir / "train", self.cache_dir, self.image_size
            )
            test_dir = self.data_dir / "test"
            self._test = (
                load_imagefolder_split(test_dir, self.cache_dir, self.image_size)
                if test_dir.is_dir()
                else None
            )
        self._check_classes()

    def _check_classes(self) -> None:
        assert self._train_full is not None
        train_classes = self._train_full.classes
        expected = KNOWN_NUM_CLASSES.get(self.dataset)
        if expected is not None and len(train_classes) != expected:
            raise DatasetError(
                f"{self.data_dir / 'train'} has {len(train_classes)} class folders, but {self.dataset} has "
                f"{expected}. Use dataset: imagefolder for other datasets."
            )
        if self._test is not None and self._test.classes != train_classes:
            only_train = sorted(set(train_classes) - set(self._test.classes))
            only_test = sorted(set(self._test.classes) - set(train_classes))
            raise DatasetError(
                f"Class folders differ between {self.data_dir / 'train'} and {self.data_dir / 'test'}: "
                f"only in train: {only_train or 'none'}; only in test: {only_test or 'none'}"
                + ("" if only_train or only_test else "; same names, different order")
                + "."
            )

    def setup(self, stage: str | None, batch_size: int) -> ChannelStats:
        """Load the decoded splits, draw the seeded train/val split and compute (or read the cached)
        mean/std of the training images."""
        self._load_splits()
        assert self._train_full is not None
        n = len(self._train_full)
        self._train_idx, self._val_idx = seeded_split(n, self.val_size, self.seed, where=str(self.data_dir))
        check_batch_fits(len(self._train_idx), batch_size, stage)
        key = (self.dataset, str(self.data_dir.resolve()), n)
        return channel_stats(self._train_full.images, self._train_idx, self.cache_dir, key)

    @property
    def source_train_size(self) -> int:
        if self._train_full is None:
            raise RuntimeError(
                "source_train_size is known after setup(); call datamodule.setup('fit') first."
            )
        return len(self._train_full)

    @property
    def input_size(self) -> int:
        if self._train_full is None:
            raise RuntimeError("input_size is known after setup(); call datamodule.setup('fit') first.")
        return int(self._train_full.images.shape[-1])

    # ------------------------------------------------------------------ the decoded tensors
    def train_images(self, count: int | None) -> Tensor:
        if self._train_full is None or self._train_idx is None:
            raise RuntimeError("train_images() needs setup('fit') first.")
        order = training_order(len(self._train_full), self.val_size, self.seed, where=str(self.data_dir))
        return self._train_full.images[order[:count]]

    def split(self, name: Literal["train", "val", "test"]) -> SplitTensors:
        if self._train_full is None or self._train_idx is None or self._val_idx is None:
            raise RuntimeError("split() needs setup() first.")
        if name == "test":
            if self._test is None:
                raise DatasetError(f"{self.data_dir} has no test split.")
            test = self._test
            return SplitTensors(test.images, test.targets, torch.arange(len(test)), test.paths)
        indices = {"train": self._train_idx, "val": self._val_idx}[name]
        full = self._train_full
        return SplitTensors(full.images, full.targets, indices, full.paths)

    def paths(self, source: Literal["train", "test"]) -> list[str]:
        split = self._test if source == "test" else self._train_full
        assert split is not None
        return split.paths

    def resident_images(self, source: Literal["train", "test"], device: torch.device) -> Tensor:
        key = (source, device)
        if key not in self._resident:
            split = self._test if source == "test" else self._train_full
            assert split is not None
            self._resident[key] = split.images.to(device)  # once per run: the only image copy to the device
        return self._resident[key]

    # ------------------------------------------------------------------ loaders
    def check_ready(self) -> None:
        if self._train_full is None or self._train_idx is None:
            raise RuntimeError("Call setup() before asking for a dataloader.")

    def _dataset(self, request: LoaderRequest) -> TensorImageDataset:
        assert self._train_full is not None and self._train_idx is not None
        gather = not self.device_resident  # resident: the loaders serve indices, gathered on the device
        if request.split == "test":
            assert self._test is not None
            source = self._test
            indices = None
        else:
            source = self._train_full
            indices = self._val_idx if request.split == "val" else self._train_idx
        return TensorImageDataset(
            source.images,
            source.targets,
            indices,
            request.transform,
            return_index=request.return_index,  # alternating flip, predict: which image each one is
            gather=gather,
        )

    def loader(self, request: LoaderRequest) -> DataLoader:
        """A DataLoader over the decoded tensors; training: a ``ResumableDataLoader`` whose seeded sampler
        resumes mid-epoch (``lit_vision.data.loaders``)."""
        self.check_ready()
        dataset = self._dataset(request)
        train, workers = request.train, request.num_workers
        sampler = make_sampler(dataset, train, request.trainer) if not request.predict else None
        loader_cls = ResumableDataLoader if isinstance(sampler, ResumableSampler) else DataLoader
        return loader_cls(
            dataset,
            batch_size=request.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            # its own generator: starting an epoch's iterator draws no number from torch's global RNG
            generator=torch.Generator().manual_seed(request.seed),
            drop_last=train,  # a tiny last batch would give noisy BN statistics; eval never drops
            num_workers=workers,
            collate_fn=passthrough_collate,
            # page-locked batches copy to a GPU asynchronously; only when this run trains on one (asking
            # torch.cuda here would initialize CUDA before a fork-based strategy starts its workers)
            pin_memory=request.pin_memory,
            persistent_workers=workers > 0,
            worker_init_fn=worker_init_fn if workers > 0 else None,
        )
