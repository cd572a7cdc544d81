"""Finding, decoding and caching the images of a dataset.

A split is read once into a :class:`DecodedSplit`: a uint8 tensor (N, 3, H, W), int64 targets, the class
names and the source paths. ImageFolder trees are decoded from JPEG/PNG once and cached on disk; the cache
key covers every file's relative path, size and modification time, so a changed dataset is decoded again.
torchvision's own CIFAR files are already raw pixel arrays and are read directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from lit_vision.progress import track

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "DecodedSplit",
    "decode_image",
    "default_cache_dir",
    "detect_layout",
    "download_torchvision_cifar",
    "find_image_files",
    "list_class_dirs",
    "load_imagefolder_split",
    "load_torchvision_cifar",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_CACHE_FORMAT = 1  # bump when the cache's content or layout changes

TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


class DatasetError(RuntimeError):
    """A dataset is missing, malformed or unreadable; the message says which file or folder and why."""


@dataclass
class DecodedSplit:
    """One split of a dataset, fully decoded in memory."""

    images: Tensor  # (N, 3, H, W) uint8
    targets: Tensor  # (N,) int64
    classes: list[str]
    paths: list[str]  # source file per image (ImageFolder) or "<split>/<index>" (torchvision files)

    def __len__(self) -> int:
        return len(self.targets)


def default_cache_dir() -> Path:
    """``$LIT_VISION_CACHE``, else ``$XDG_CACHE_HOME/lit_vision``, else ``~/.cache/lit_vision``."""
    if env := os.environ.get("LIT_VISION_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lit_vision"


def layouts_help(dataset: str, data_dir: Path) -> str:
    """The layouts ``data_dir`` may hold, for error messages."""
    lines = [f"--data.data_dir={data_dir} must hold one of:"]
    if dataset in TORCHVISION_FOLDERS:
        lines.append(
            f"  * torchvision's {dataset} files: {data_dir}/{TORCHVISION_FOLDERS[dataset]}/ "
            "(downloaded automatically when the network is reachable)"
        )
    lines.append(
        f"  * an ImageFolder tree: {data_dir}/train/<class>/<image> "
        f"(and optionally {data_dir}/test/<class>/...)"
    )
    lines.append("Point --data.data_dir at such a folder, e.g. --data.data_dir ../shared/data/cifar10")
    return "\n".join(lines)


def detect_layout(dataset: str, data_dir: Path) -> str | None:
    """``"torchvision"``, ``"imagefolder"`` or ``None`` (nothing usable yet) for ``data_dir``."""
    if dataset in TORCHVISION_FOLDERS and (data_dir / TORCHVISION_FOLDERS[dataset]).is_dir():
        return "torchvision"
    if (data_dir / "train").is_dir():
        return "imagefolder"
    return None


def load_torchvision_cifar(dataset: str, data_dir: Path, train: bool) -> DecodedSplit:
    """Read torchvision's CIFAR-10/100 python pickles (no download here; see ``prepare_data``)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if dataset == "cifar10" else CIFAR100
    split = "train" if train else "test"
    try:
        ds = cls(str(data_dir), train=train, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted."
        raise DatasetError(
            f"torchvision's {dataset} files under {data_dir / TORCHVISION_FOLDERS[dataset]} are incomplete "
            f"or corrupted ({err}). Delete that folder to download again.\n{layouts_help(dataset, data_dir)}"
        ) from err
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    targets = torch.as_tensor(ds.targets, dtype=torch.int64)
    bad = ((targets < 0) | (targets >= len(ds.classes))).nonzero().flatten()
    if len(bad):
        raise DatasetError(
            f"torchvision's {dataset} {split} files under {data_dir / TORCHVISION_FOLDERS[dataset]} hold "
            f"{len(bad)} labels outside 0..{len(ds.classes) - 1} (first: image {int(bad[0])} has label "
            f"{int(targets[bad[0]])}). The files are corrupted or not {dataset}: delete that folder to "
            "download again."
        )
    return DecodedSplit(images, targets, list(ds.classes), [f"{split}/{i}" for i in range(len(targets))])


def list_class_dirs(split_dir: Path) -> list[str]:
    """Sorted class-folder names of an ImageFolder split (hidden folders skipped)."""
    if not split_dir.is_dir():
        raise DatasetError(f"Missing split folder {split_dir}.")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"{split_dir} holds no class folders: an ImageFolder split is {split_dir}/<class>/<image>."
        )
    return classes


def find_image_files(split_dir: Path) -> tuple[list[str], list[Path], list[int]]:
    """Class names, image files and their labels of an ImageFolder split.

    Non-image files (by extension) and hidden files are skipped; a class folder with no image is an error.
    """
    classes = list_class_dirs(split_dir)
    files: list[Path] = []
    labels: list[int] = []
    skipped: list[Path] = []
    for label, name in enumerate(classes):
        class_files = []
        for p in sorted((split_dir / name).rglob("*")):
            if p.name.startswith(".") or not p.is_file():
                continue
            (class_files if p.suffix.lower() in IMAGE_EXTENSIONS else skipped).append(p)
        if not class_files:
            raise DatasetError(
                f"Class folder {split_dir / name} holds no images "
                f"(extensions: {', '.join(IMAGE_EXTENSIONS)})."
            )
        files += class_files
        labels += [label] * len(class_files)
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} non-image file(s) in {split_dir} (e.g. {skipped[0]}); image extensions: "
            f"{', '.join(IMAGE_EXTENSIONS)}.",
            stacklevel=2,
        )
    return classes, files, labels


def _fingerprint(root: Path, files: list[Path], image_size: int | None) -> str:
    h = hashlib.sha1()
    h.update(f"{_CACHE_FORMAT}|{root.resolve()}|{image_size}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def decode_image(path: Path | BinaryIO, image_size: int | None, name: str | None = None) -> np.ndarray:
    """One file (or its bytes, with ``name`` for messages) -> writable (H, W, 3) uint8; grayscale, palette,
    RGBA and 16-bit images become 8-bit RGB. Both back-ends decode through here, so their pixels are
    identical."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray((arr * 255.0 / max(arr.max(), 1.0)).astype(np.uint8))
            im = im.convert("RGB")
            if image_size is not None and im.size != (image_size, image_size):
                # Shorter side to image_size, then a centre crop: aspect ratio kept, nothing stretched.
                im = ImageOps.fit(im, (image_size, image_size), Image.Resampling.BICUBIC)
            # np.array, not np.asarray: asarray wraps PIL's bytes read-only, and torch.from_numpy of a
            # read-only array warns on every run (the tensor could write to memory it must not).
            return np.array(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"Cannot read image {name or path}: {err}. Delete or replace the file.") from err


def _decode_into_one_tensor(
    split_dir: Path, files: list[Path], image_size: int | None, threads: int
) -> Tensor:
    """Decode ``files`` with ``threads`` threads straight into one uint8 (N, 3, H, W) tensor: the decoded set
    is held once (a list of arrays, then a stacked copy, then a channels-first copy would hold it three
    times at the peak, and cap the datasets that fit in memory at a third)."""
    images: Tensor | None = None
    first: tuple[int, ...] = ()
    with ThreadPoolExecutor(threads) as pool:
        decoded = pool.map(lambda p: decode_image(p, image_size), files, chunksize=64)
        try:
            progress = track(decoded, len(files), f"Decoding {split_dir} into the cache", min_total=1000)
            for i, (f, a) in enumerate(zip(files, progress, strict=True)):
                if images is None:
                    first = a.shape
                    images = torch.empty((len(files), 3, first[0], first[1]), dtype=torch.uint8)
                elif a.shape != first:
                    raise DatasetError(
                        f"Images in {split_dir} differ in size ({files[0]} is {first[1]}x{first[0]}, {f} "
                        f"is {a.shape[1]}x{a.shape[0]}). Set --data.image_size to resize them to one square "
                        "size."
                    )
                images[i] = torch.from_numpy(a).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # a bad image stops the decode now, not at the end
            raise
    assert images is not None  # find_image_files refuses a split without images
    return images


def load_imagefolder_split(
    split_dir: Path, cache_dir: Path, image_size: int | None = None, num_threads: int | None = None
) -> DecodedSplit:
    """Decode an ImageFolder split (``split_dir/<class>/<image>``) once and cache it in ``cache_dir``.

    Args:
        split_dir: folder whose sub-folders are the classes.
        cache_dir: where the decoded tensor file is kept.
        image_size: resize (shorter side) and centre-crop every image to this square size; ``None`` keeps
            the native size, which must then be the same for all images.
        num_threads: decoding threads (PIL releases the GIL while decoding).
    """
    classes, files, labels = find_image_files(split_dir)
    key = _fingerprint(split_dir, files, image_size)
    cache_file = Path(cache_dir) / f"{split_dir.name}-{key}.pt"
    if cache_file.is_file():
        try:
            blob = torch.load(cache_file, weights_only=True)
            return DecodedSplit(blob["images"], blob["targets"], blob["classes"], blob["paths"])
        except (OSError, RuntimeError, KeyError, EOFError):
            cache_file.unlink(missing_ok=True)  # a truncated cache (killed writer) is rebuilt

    threads = num_threads or min(8, 2 * (os.cpu_count() or 1))
    images = _decode_into_one_tensor(split_dir, files, image_size, threads)
    split = DecodedSplit(
        images,
        torch.tensor(labels, dtype=torch.int64),
        classes,
        [str(f.relative_to(split_dir)) for f in files],
    )
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        torch.save(
            {"images": split.images, "targets": split.targets, "classes": classes, "paths": split.paths}, tmp
        )
        tmp.replace(cache_file)  # atomic: other ranks never see a half-written cache
    except OSError as err:
        warnings.warn(
            f"Could not write the decode cache {cache_file} ({err}); decoding again next run.", stacklevel=2
        )
    return split


def cached_json(path: Path) -> dict | None:
    """Read a small JSON cache entry, or ``None``."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    """Write a small JSON cache entry atomically; failures only cost a recomputation."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        pass


def download_torchvision_cifar(dataset: str, data_dir: Path) -> None:
    """Download torchvision's ``cifar10``/``cifar100`` files into ``data_dir`` (train and test).

    Raises:
        DatasetError: the download is impossible (offline, no permission...), with the layouts ``data_dir``
            may hold instead and how to point ``--data.data_dir`` at them.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    if dataset not in ("cifar10", "cifar100"):
        raise DatasetError(f"Only cifar10 and cifar100 can be downloaded, not {dataset!r}.")
    cls = CIFAR10 if dataset == "cifar10" else CIFAR100
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        cls(str(data_dir), train=True, download=True)
        cls(str(data_dir), train=False, download=True)
    except Exception as err:  # URLError, socket errors, SSL errors, permission errors...
        raise DatasetError(
            f"Could not download {dataset} into {data_dir} ({type(err).__name__}: {err}).\n"
            f"{layouts_help(dataset, data_dir)}"
        ) from err
