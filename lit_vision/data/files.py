"""Prediction inputs: image files, folders (recursive), labelled ImageFolder trees and dataset splits.

Every input becomes a ``PredictItem`` (a path to decode, or an already decoded CIFAR image) with an optional
label. Files are decoded in DataLoader workers; an unreadable file becomes a row with an error message
instead of stopping the run.

Resizing: images are brought to the size the model was trained at (stored in its checkpoint) the way the
training data was: shorter side resized (bicubic), then centre-cropped to a square. Colour modes (grayscale,
palette, RGBA, 16-bit) become 8-bit RGB; EXIF orientation is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lit_vision.data.sources import (
    IMAGE_EXTENSIONS,
    DatasetError,
    decode_image,
    default_cache_dir,
    detect_layout,
    download_torchvision_cifar,
    load_imagefolder_split,
    load_torchvision_cifar,
)

__all__ = ["PredictDataset", "PredictItem", "collect_inputs"]


@dataclass
class PredictItem:
    """One image to predict: ``path`` (shown in the output) and either a file to decode or ``pixels``."""

    path: str
    target: int | None = None
    pixels: Tensor | None = None  # (3, H, W) uint8, for dataset splits decoded up front


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _dataset_split(spec: str, data_dir: Path | None, classes: Sequence[str]) -> list[PredictItem]:
    name, _, split = spec.partition(":")
    data_dir = Path(data_dir) if data_dir is not None else Path("data") / name  # the CLI's default
    if split not in ("train", "test"):
        raise DatasetError(f"{spec!r}: a dataset split is <cifar10|cifar100>:<train|test>.")
    layout = detect_layout(name, data_dir)
    if layout is None:
        download_torchvision_cifar(name, data_dir)  # or an error saying how to point at local data
        layout = detect_layout(name, data_dir)
    if layout == "torchvision":
        decoded = load_torchvision_cifar(name, data_dir, train=split == "train")
    else:
        decoded = load_imagefolder_split(data_dir / split, default_cache_dir())
    if list(decoded.classes) != list(classes):
        raise DatasetError(
            f"{spec} has {len(decoded.classes)} classes ({', '.join(decoded.classes[:5])}, ...) but the "
            f"checkpoint predicts {len(classes)} ({', '.join(list(classes)[:5])}, ...): it was not "
            f"trained on {name}."
        )
    return [
        PredictItem(f"{spec}/{i}", int(t), img)
        for i, (t, img) in enumerate(zip(decoded.targets.tolist(), decoded.images, strict=True))
    ]


def collect_inputs(
    inputs: Sequence[str], classes: Sequence[str], data_dir: Path | None = None
) -> list[PredictItem]:
    """Expand the command line's inputs into items, in order.

    * ``cifar10:test`` / ``cifar100:train``...: the dataset split from ``data_dir`` (default
      ``data/<name>``; torchvision's files, downloaded when missing, or an ImageFolder copy), labelled;
    * a folder whose sub-folders are all class names of the checkpoint (an ImageFolder ``test/``): every file
      below, labelled by its class folder;
    * any other folder: every file below (recursively), unlabelled; hidden files are skipped, every other
      file gets a row (one that is not an image: with its error);
    * a file: itself, whatever its extension (a bad one is reported in the output, not skipped).
    """
    class_index = {c: i for i, c in enumerate(classes)}
    items: list[PredictItem] = []
    for spec in inputs:
        path = Path(spec)
        if not path.exists() and ":" in spec and spec.split(":", 1)[0] in ("cifar10", "cifar100"):
            items += _dataset_split(spec, data_dir, classes)
        elif path.is_dir():
            subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
            labelled = bool(subdirs) and all(d.name in class_index for d in subdirs)
            for f in _files_under(path):  # non-image files too: they get a row with their error
                parts = f.relative_to(path).parts
                labelled_file = labelled and len(parts) > 1  # files beside the class folders: no label
                items.append(PredictItem(str(f), class_index[parts[0]] if labelled_file else None))
        elif path.is_file():
            items.append(PredictItem(str(path)))
        else:
            raise DatasetError(
                f"Input {spec!r} is neither a file, a folder nor a dataset split (cifar10:test)."
            )
    if not items:
        raise DatasetError(
            f"No images found in {', '.join(inputs)} (extensions: {', '.join(IMAGE_EXTENSIONS)})."
        )
    return items


class PredictDataset(Dataset):
    """Items -> ``(image uint8 (3, S, S), target (-1: none), index, error)``; ``error`` is ``""`` for an image
    that was read, else why it could not be (the image is then zeros).

    Args:
        items: from ``collect_inputs``.
        image_size: the model's training size ``S`` (square).
    """

    def __init__(self, items: Sequence[PredictItem], image_size: int) -> None:
        self.items = list(items)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int, str]:
        item = self.items[i]
        target = -1 if item.target is None else item.target
        try:
            if item.pixels is not None:
                img = item.pixels
                if img.shape[-1] != self.image_size or img.shape[-2] != self.image_size:
                    raise DatasetError(
                        f"is {img.shape[-1]}x{img.shape[-2]}, the model takes {self.image_size}"
                    )
            else:
                array = decode_image(
                    Path(item.path), self.image_size
                ).copy()  # PIL hands out read-only memory
                img = torch.from_numpy(array).permute(2, 0, 1).contiguous()
            return img, target, i, ""
        except DatasetError as err:
            message = (
                str(err)
                .replace(f"Cannot read image {item.path}: ", "")
                .replace(" Delete or replace the file.", "")
            )
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), target, i, message
