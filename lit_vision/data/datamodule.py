"""``ImageDataModule``: CIFAR-10, CIFAR-100 or any ImageFolder tree, decoded once into memory, or streamed
from litdata shards (``backend: streaming``) when it does not fit.

Data flow: a back-end (``lit_vision.data.backend``) owns the images and builds the loaders, which yield uint8
batches (N, 3, H, W); ``on_after_batch_transfer`` turns them into normalized float batches on the device, with
batched random crop / flip / Cutout during training. The alternative ``augment: albumentations`` (or
``torchvision``) runs a per-sample albumentations (or torchvision ``transforms.v2``) pipeline in DataLoader
workers instead.

- ``backend: memory`` (``lit_vision.data.memory_backend``): images decoded once to one uint8 tensor (cached on
  disk for ImageFolder trees), optionally kept on the device (``device_resident``).
- ``backend: streaming`` (``lit_vision.data.streaming_backend``): shards written by ``python -m
  lit_vision.data.shards``, each image decoded in the workers.

This module keeps what both share: the argument checks, which split ``test``/``predict`` serve, the batched
augmentation on the device, the Lightning hooks and the public API.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader

from lit_vision.data.augmentation import build_batch_augment, build_sample_transform
from lit_vision.data.backend import KNOWN_NUM_CLASSES, DataBackend, LoaderRequest, SplitTensors
from lit_vision.data.memory_backend import MemoryBackend
from lit_vision.data.sources import DatasetError, default_cache_dir, detect_layout
from lit_vision.data.transforms import BatchAugment
from lit_vision.errors import ConfigError
from lit_vision.seeding import run_seed

__all__ = ["ImageDataModule", "SplitTensors"]

#: the choices of the Literal arguments: the CLI refuses others itself, Python callers get the same message
_CHOICES: dict[str, tuple[str | None, ...]] = {
    "dataset": ("cifar10", "cifar100", "imagefolder"),
    "backend": ("memory", "streaming"),
    "augment": ("batched", "albumentations", "torchvision"),
    "policy": ("none", "randaugment", "trivialaugment"),
    "predict_split": ("test", "val", "train", None),
}


def _check_arguments(args: dict[str, Any]) -> None:
    """Refuse option values that cannot be meant, in ``__init__``: before any data is loaded or decoded.

    Messages name the option as the CLI spells it (``--data.batch_size``); the checks are written ``not (ok)``
    so that a NaN is refused too.
    """
    for name, choices in _CHOICES.items():
        if args[name] not in choices:
            shown = ", ".join(str(c) for c in choices if c is not None)
            raise ConfigError(f"--data.{name} must be one of {shown}, got {args[name]!r}.")
    at_least = {
        "batch_size": (1, "images per optimizer step on each device"),
        "eval_batch_size": (1, "or unset for 2 x batch_size"),
        "crop_padding": (0, "pixels of random-crop shift; 0 disables it"),
        "cutout": (0, "side of the Cutout square in pixels; 0 disables it"),
        "num_ops": (1, "RandAugment operations per image"),
        "color_jitter": (0, "jitter strength; 0 disables it"),
        "image_size": (1, "side in pixels, or unset for the native size"),
        "num_workers": (0, "0 loads in the main process"),
    }
    for name, (low, what) in at_least.items():
        value = args[name]
        if value is not None and not value >= low:
            raise ConfigError(f"--data.{name} must be >= {low} ({what}), got {value}.")
    if not 0 <= args["magnitude"] <= 30:
        raise ConfigError(
            f"--data.magnitude is a RandAugment magnitude bin, 0..30 (default 9), got {args['magnitude']}."
        )
    if not 0 <= args["random_erasing"] <= 1:
        raise ConfigError(
            f"--data.random_erasing is a probability per image in [0, 1], got {args['random_erasing']}."
        )
    _check_val_size(args["val_size"])
    augment = args["augment"]
    if augment in ("albumentations", "torchvision") and not args[augment]:
        raise ConfigError(f"--data.augment {augment} needs a pipeline in data.{augment} (--data.{augment}).")
    if args["device_resident"] and augment != "batched":
        raise ConfigError(
            f"--data.device_resident needs augment: batched ({augment} runs per sample on the host)."
        )
    if args["device_resident"] and args["backend"] == "streaming":
        raise ConfigError(
            "--data.device_resident needs backend: memory (streaming never holds the whole set)."
        )


def _check_val_size(val_size: int | float) -> None:
    """A count (an int), a fraction below 1 (a float), or 0. A float of 1 or more is refused: ``2.0`` could be
    two images or a mistyped fraction (``0.2``), and the split would silently hold out the wrong number."""
    if not val_size >= 0:
        raise ConfigError(
            f"--data.val_size must be >= 0 (a count such as 5000, a fraction such as 0.1, or 0 for no "
            f"validation), got {val_size}."
        )
    if isinstance(val_size, float) and val_size >= 1:
        count = (
            f"--data.val_size {int(val_size)}" if val_size.is_integer() else "an int (--data.val_size 500)"
        )
        raise ConfigError(
            f"--data.val_size {val_size} is a float >= 1: write a count of images as {count}, or a fraction "
            "of the train split below 1 (--data.val_size 0.1)."
        )


class ImageDataModule(L.LightningDataModule):
    """CIFAR-10/100 or an ImageFolder tree, in memory or streamed, with batched on-device augmentation.

    Args:
        dataset: ``cifar10``, ``cifar100`` or ``imagefolder`` (``data_dir/train/<class>/*``, optional
            ``data_dir/test/<class>/*``).
        data_dir: for cifar10/100 either torchvision's files (downloaded here when missing and ``download``
            is set) or an ImageFolder copy of the dataset; for imagefolder the tree's root. With ``backend:
            streaming``: the shard folder written by ``python -m lit_vision.data.shards``, or its URL
            (``s3://bucket/cifar10``, ``gs://...``).
        backend: ``memory`` (default): every image decoded once into one uint8 tensor (fast; the dataset must
            fit in RAM). ``streaming``: litdata shards streamed from disk or a bucket, decoded per sample in
            workers, sharded by rank and worker (datasets larger than memory, multi-node runs; needs
            ``pip install 'lit-vision[streaming]'``). The shards fix the train/val split: ``val_size`` and
            ``seed`` must equal the conversion's.
        batch_size: training batch size per device (per process under DDP).
        eval_batch_size: batch size for val/test/predict (default: 2 x ``batch_size``).
        val_size: images held out of the train split for validation: a count (an int, ``5000``) or a fraction
            (a float below 1, ``0.1``); 0 trains on every image and skips validation (``test``/``predict``
            then need a test split). A float of 1 or more (``2.0``: two images or a mistyped fraction?) is
            refused.
        seed: seed of the train/val split (the same split on every rank and every run).
        augment: ``batched`` (tensor ops on the device, default), or a per-sample pipeline in workers:
            ``albumentations`` or ``torchvision`` (``transforms.v2``).
        crop_padding: batched path: random-crop shift in pixels (reflect padding); 0 disables.
        hflip: batched path: random horizontal flip.
        alternating_flip: batched path, with ``hflip``: instead of a coin per image and epoch, flip every
            image in every other epoch, starting from a random choice per image (airbench, Jordan 2024: more
            distinct views early in training). The choice is a function of (run seed, image), so resumed
            runs see the same flips.
        cutout: batched path: Cutout square side in pixels; 0 disables.
        policy: batched path: ``randaugment`` (RandAugment, Cubuk et al. 2020) or ``trivialaugment``
            (TrivialAugmentWide, Müller & Hutter 2021), a draw per image on the device after crop and flip
            (``lit_vision.data.policies``); ``none``: off.
        num_ops: batched path, RandAugment: operations per image.
        magnitude: batched path, RandAugment: magnitude bin, 0..30 (torchvision's default 9).
        color_jitter: batched path: brightness, contrast and saturation jitter strength ``s`` (factors
            uniform in ``[1 - s, 1 + s]`` per image); 0 disables.
        random_erasing: batched path: probability per image of random erasing (Zhong et al. 2020), the
            rectangle set to the mean; 0 disables.
        albumentations: albumentations path: list of ``{name: Transform, arg: value}`` entries.
        torchvision: torchvision path: list of ``{name: Transform, arg: value}`` entries of
            ``torchvision.transforms.v2`` on uint8 tensors (no ``Normalize``: that runs on the device).
        image_size: resize + centre-crop ImageFolder images to this square size (``None``: keep native size).
        channels_last: deliver batches in channels-last memory format (match ``model.channels_last``).
        device_resident: batched path: keep the decoded uint8 images on the accelerator (moved once, at the
            first batch); the loaders yield sample indices and the batch is gathered there, so no image
            crosses the host-device link per step. Samplers, DDP sharding and mid-epoch resume are the same
            (they deal in indices either way). Costs the dataset's size in device memory (CIFAR: 150 MB).
        num_workers: DataLoader workers (default: 0 for ``batched`` in memory, where batches are tensor
            slices; min(4, CPUs) for the per-sample paths and the streaming back-end, which decode in them).
        cache_dir: where decoded ImageFolder tensors and statistics are cached (default:
            ``$LIT_VISION_CACHE`` or ``~/.cache/lit_vision``).
        download: download torchvision's CIFAR files in ``prepare_data`` when ``data_dir`` holds no data.
        predict_split: split served by ``predict``: ``test``, ``val`` or ``train`` (default: test if the
            dataset has one, else val).
    """

    def __init__(
        self,
        dataset: Literal["cifar10", "cifar100", "imagefolder"] = "cifar10",
        data_dir: str | Path = "data/cifar10",
        backend: Literal["memory", "streaming"] = "memory",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_size: int | float = 5000,
        seed: int = 0,
        augment: Literal["batched", "albumentations", "torchvision"] = "batched",
        crop_padding: int = 4,
        hflip: bool = True,
        alternating_flip: bool = False,
        cutout: int = 0,
        policy: Literal["none", "randaugment", "trivialaugment"] = "none",
        num_ops: int = 2,
        magnitude: int = 9,
        color_jitter: float = 0.0,
        random_erasing: float = 0.0,
        albumentations: list[dict[str, Any]] | None = None,
        torchvision: list[dict[str, Any]] | None = None,
        image_size: int | None = None,
        channels_last: bool = False,
        device_resident: bool = False,
        num_workers: int | None = None,
        cache_dir: str | Path | None = None,
        download: bool = True,
        predict_split: Literal["test", "val", "train"] | None = None,
    ) -> None:
        super().__init__()
        _check_arguments(locals())  # every argument, by name, before any work
        # Paths as strings: checkpoints must load with torch.load(weights_only=True), which rejects PosixPath.
        self.save_hyperparameters(ignore=["data_dir", "cache_dir"])
        self.hparams.update(data_dir=str(data_dir), cache_dir=None if cache_dir is None else str(cache_dir))
        self.dataset, self.backend, self.augment = dataset, backend, augment
        self.data_dir = Path(data_dir).expanduser()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or 2 * batch_size
        self.val_size, self.seed, self.image_size, self.download = val_size, seed, image_size, download
        self.albumentations, self.torchvision = albumentations, torchvision
        self.crop_padding, self.hflip, self.cutout = crop_padding, hflip, cutout
        self.alternating_flip = alternating_flip and hflip and augment == "batched"
        self.channels_last, self.device_resident = channels_last, device_resident
        self.predict_split = predict_split
        # Built here so a typo in the pipeline fails at start-up, not in a worker after data loading.
        self._sample_transform = build_sample_transform(self.hparams)
        #: where the images come from (``lit_vision.data.backend``): what differs between back-ends is there
        self._backend = _make_backend(self, data_dir)
        # Batched in memory: batches are tensor slices, workers would only add IPC. Per-sample pipelines and
        # back-ends that decode each image in the loader work per sample.
        per_sample = augment != "batched" or self._backend.decodes_per_sample
        default_workers = min(4, os.cpu_count() or 1) if per_sample else 0
        self.num_workers = num_workers if num_workers is not None else default_workers
        #: alternating flip: whether each image of the train split's source (by index) flips in even epochs
        self._flip_phase: Tensor | None = None
        self._mean: tuple[float, float, float] | None = None
        self._std: tuple[float, float, float] | None = None
        self.batch_transform: BatchAugment | None = None

    # ------------------------------------------------------------------ metadata
    @property
    def layout(self) -> str | None:
        """``torchvision`` or ``imagefolder``: what ``data_dir`` holds now (``None``: nothing usable)."""
        return detect_layout(self.dataset, self.data_dir)

    @property
    def classes(self) -> list[str]:
        """Class names in label order (valid right after ``__init__``)."""
        return self._backend.classes

    @property
    def num_classes(self) -> int:
        """Number of classes (linked into ``model.num_classes`` by the CLI)."""
        if self.dataset in KNOWN_NUM_CLASSES:
            return KNOWN_NUM_CLASSES[self.dataset]
        return len(self.classes)

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of the training images in [0, 1] units (available after ``setup``)."""
        if self._mean is None:
            raise RuntimeError("mean is computed in setup(); call datamodule.setup('fit') first.")
        return self._mean

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation of the training images in [0, 1] units (after ``setup``)."""
        if self._std is None:
            raise RuntimeError("std is computed in setup(); call datamodule.setup('fit') first.")
        return self._std

    @property
    def input_size(self) -> int:
        """Side in pixels of the (square) images the loaders serve (after ``setup``): ``image_size`` when set,
        else the dataset's own size (32 for CIFAR)."""
        return self._backend.input_size

    def train_images(self, count: int | None = None) -> Tensor:
        """``count`` images of the train split (validation held out), uint8 (N, 3, H, W) on the CPU (available
        after ``setup``): the first of ``splits.training_order``, a seeded sample of every class and the same
        images on both back-ends. What a backbone's data-dependent initialization and the preview read."""
        return self._backend.train_images(count)

    def split(self, name: Literal["train", "val", "test"]) -> SplitTensors:
        """The decoded images of split ``name`` (memory back-end, after ``setup``), as the loaders index them:
        ``images`` (N, 3, H, W) uint8 and ``targets`` (N,) int64 of the file the split comes from (train and
        val share the train file) and ``indices``, the split's positions in them. What benchmarks that time a
        plain loop against Lightning feed the plain side with."""
        return self._backend.split(name)

    @property
    def has_test_split(self) -> bool:
        """Whether the dataset has a test split (valid right after ``__init__``)."""
        return self._backend.has_test_split

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Download torchvision's CIFAR files if needed (rank 0 only), and warm the decode cache; streaming:
        check the shards (complete, of this project's format, every local shard file whole)."""
        self._backend.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load the decoded splits, draw the seeded train/val split and compute mean/std (streaming: read them
        from the shards' metadata); then the training randomness and the batched augmentation."""
        self._mean, self._std = self._backend.setup(stage, self.batch_size)
        if self.alternating_flip:
            # the run's seed (what the sampler uses), not the split's: flips are training randomness, drawn
            # per image of the train split's source, the index that training batches carry
            generator = torch.Generator().manual_seed(run_seed())
            size = (self._backend.source_train_size,)
            self._flip_phase = torch.randint(0, 2, size, generator=generator, dtype=torch.bool)
        self.batch_transform = build_batch_augment(self.hparams, self._mean, self._std)

    # ------------------------------------------------------------------ loaders
    def _resolve_eval_split(self, split: str) -> Literal["train", "val", "test"]:
        """The split whose images ``val``, ``test`` or ``predict`` serve: ``predict_split`` when set, else the
        test split, else (with a warning) the held-out validation split."""
        if split == "val":
            return "val"
        name = self.predict_split if split == "predict" and self.predict_split is not None else None
        has_test = self._backend.has_split("test")
        if name == "test" and not has_test:
            raise DatasetError(f"predict_split=test, but {self.hparams.data_dir} has no test split.")
        if name is None and has_test:
            name = "test"
        if name is None:
            name = "val"
            if self._backend.has_split("val"):
                rank_zero_warn(
                    f"{self.hparams.data_dir} has no test split; {split} uses the held-out validation split "
                    "instead."
                )
        if name == "val" and not self._backend.has_split("val"):
            raise DatasetError(
                f"{split} needs images to evaluate, but {self.data_dir} has no test split and val_size=0 "
                "holds none out: add a test split, run it with a val_size > 0, or predict on files "
                "(predict.py)."
            )
        return name

    def predict_paths(self) -> list[str]:
        """Source path of every image, indexed like the ``index`` element of predict batches."""
        name = self._resolve_eval_split("predict")
        return self._backend.paths("test" if name == "test" else "train")

    def _loader(self, split: Literal["train", "val", "test", "predict"]) -> DataLoader:
        self._backend.check_ready()
        train = split == "train"
        request = LoaderRequest(
            split="train" if train else self._resolve_eval_split(split),
            train=train,
            predict=split == "predict",
            batch_size=self.batch_size if train else self.eval_batch_size,
            num_workers=self.num_workers,
            seed=run_seed(),
            transform=self._sample_transform if train else None,
            # training with alternating flip: the flip of an image depends on which image it is
            return_index=self.alternating_flip if train else split == "predict",
            # page-locked batches copy to a GPU asynchronously; only when this run trains on one (asking
            # torch.cuda here would initialize CUDA before a fork-based strategy starts its workers)
            pin_memory=isinstance(getattr(self.trainer, "accelerator", None), CUDAAccelerator),
            trainer=self.trainer,
        )
        return self._backend.loader(request)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        if not self._backend.has_split("val"):
            return []  # val_size: 0: Lightning skips validation
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    # ------------------------------------------------------------------ on the device
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 batch on the device -> normalized float batch (augmented during training, batched path)."""
        if self.batch_transform is None:
            return batch
        images, *rest = batch
        trainer = self.trainer
        if self.device_resident:
            images = self._resident_images(images.device)[images]  # (N,) indices -> (N, 3, H, W) uint8
        augment = trainer is not None and trainer.training and self.augment == "batched"
        if augment and self.alternating_flip:
            targets, index = rest
            images, rest = self.augment_train_batch(images, index, trainer.current_epoch), [targets]
        else:
            images = self.batch_transform(images, train=augment)
        if trainer is not None:
            # Lightning casts a batch to the precision's input dtype before this hook, while it is still
            # uint8 (left alone): cast the normalized float images now, or bf16-true/16-true weights get
            # float32 inputs (a dtype error at the first layer). Mixed precision leaves them float32.
            images = trainer.precision_plugin.convert_input(images)
        return (images, *rest)

    def _resident_images(self, device: torch.device) -> Tensor:
        """device_resident: the uint8 images the current loader's indices point into, on ``device``."""
        trainer = self.trainer
        source: Literal["train", "test"] = "train"  # train and val index the train split
        if trainer is not None and (trainer.testing or trainer.predicting):
            served = self._resolve_eval_split("test" if trainer.testing else "predict")
            source = "test" if served == "test" else "train"
        return self._backend.resident_images(source, device)

    def augment_train_batch(self, images: Tensor, index: Tensor, epoch: int) -> Tensor:
        """uint8 training images (N, 3, H, W) of the train split's ``index`` (N,) in ``epoch`` -> the
        normalized, augmented batch the model trains on (batched path; what ``fit`` does to each batch)."""
        if self.batch_transform is None:
            raise RuntimeError("augment_train_batch() needs setup('fit') first.")
        if not self.alternating_flip:
            return self.batch_transform(images, train=True)
        assert self._flip_phase is not None
        if self._flip_phase.device != index.device:
            self._flip_phase = self._flip_phase.to(index.device)
        flip = self._flip_phase[index] ^ bool(epoch % 2)  # (N,) bool
        return self.batch_transform(images, train=True, flip=flip)

    # ------------------------------------------------------------------ checkpointing of the split
    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "val_size": self.val_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if (state_dict.get("seed"), state_dict.get("val_size")) != (self.seed, self.val_size):
            warnings.warn(
                f"Resuming with a different train/val split (checkpoint: seed={state_dict.get('seed')}, "
                f"val_size={state_dict.get('val_size')}; now: seed={self.seed}, val_size={self.val_size}).",
                stacklevel=2,
            )


def _make_backend(dm: ImageDataModule, data_dir: str | Path) -> DataBackend:
    """The back-end ``dm.backend`` names, over ``data_dir`` as the user wrote it (a shard URL must keep its
    ``//``)."""
    if dm.backend == "streaming":
        # imports litdata, an optional extra: only when streaming is asked for
        from lit_vision.data.streaming_backend import StreamingBackend

        return StreamingBackend(dm.dataset, str(data_dir), dm.cache_dir, dm.image_size, dm.val_size, dm.seed)
    return MemoryBackend(
        dm.dataset,
        dm.data_dir,
        dm.cache_dir,
        dm.image_size,
        dm.val_size,
        dm.seed,
        download=dm.download,
        device_resident=dm.device_resident,
    )
