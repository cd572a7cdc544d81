"""Convert a dataset into litdata shards for the streaming back-end (``data.backend: streaming``).

    python -m lit_vision.data.shards SRC OUT [--val-size 5000] [--seed 0] [--image-size S] [--workers N]

SRC is an ImageFolder tree (``SRC/train/<class>/<image>``, optional ``SRC/test/...``), a folder with
torchvision's CIFAR files, or ``cifar10``/``cifar100`` (downloaded into ``--download-dir``). OUT receives:

    OUT/train/, OUT/val/, OUT/test/   litdata-optimized chunks (``index.json`` + ``chunk-*.bin``), one item
                                      per image: the encoded bytes (an ImageFolder file as it is; CIFAR pixels
                                      as PNG, lossless), the label, and the image's index in its source split;
                                      train in a seeded random order (``splits.training_order``), val and
                                      test in source order
    OUT/paths/train.txt, test.txt     each source split's image paths, one per line, in source order
    OUT/meta.json                     written last: classes, channel mean/std of the training images, the
                                      split (val_size, seed: the memory back-end's seeded split, so both
                                      back-ends train and validate on the same images), counts, image size

The train/val split is drawn here with the memory back-end's ``seeded_split``: training on OUT with
``data.val_size``/``data.seed`` equal to the conversion's uses the very images the memory back-end would.

Re-running is safe: OUT marked complete for the same source and options is left alone; a half-written OUT
(a conversion that was stopped: a marker file, no ``meta.json``) is deleted and written again, never used;
a non-empty folder that is not ours is refused. Copy OUT to shared storage or a bucket as a whole
(``aws s3 sync OUT s3://bucket/cifar10``) and point ``data.data_dir`` at it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lit_vision.data.shard_format import INCOMPLETE_MARKER, META_FILE, SHARD_FORMAT
from lit_vision.data.sources import (
    DatasetError,
    DecodedSplit,
    decode_image,
    detect_layout,
    download_torchvision_cifar,
    find_image_files,
    layouts_help,
    load_torchvision_cifar,
)
from lit_vision.data.splits import channel_moments, seeded_split, training_order
from lit_vision.errors import exit_on_error

__all__ = ["convert", "main"]


class _EncodeItem:
    """One source image -> ``(encoded bytes, label, source index)`` (runs in litdata's worker processes).

    Every image is decoded once here, as training will decode it, so an unreadable file or a size that
    the batch could not stack fails the conversion with its path, not a training run hours later.
    """

    def __init__(
        self,
        classes: list[str],
        split: DecodedSplit | None = None,
        files: list[Path] | None = None,
        labels: list[int] | None = None,
        image_size: int | None = None,
    ) -> None:
        self.classes, self.split, self.image_size = classes, split, image_size
        self.files, self.labels = files or [], labels or []
        self.expected: tuple[int, ...] | None = None  # the first image's decoded shape, set before optimize

    def __call__(self, i: int) -> tuple[bytes, int, int]:
        if self.split is not None:  # torchvision CIFAR: raw pixels -> PNG (lossless)
            buffer = io.BytesIO()
            Image.fromarray(self.split.images[i].permute(1, 2, 0).numpy()).save(buffer, format="PNG")
            return buffer.getvalue(), int(self.split.targets[i]), i
        path = self.files[i]
        data = path.read_bytes()  # kept as it is: no re-encoding loss, and training decodes exactly this
        shape = decode_image(io.BytesIO(data), self.image_size, name=str(path)).shape
        if self.expected is not None and shape != self.expected:
            raise DatasetError(
                f"{path} decodes to {shape[1]}x{shape[0]}, the first image to {self.expected[1]}x"
                f"{self.expected[0]}: pass --image-size to resize every image to one square size."
            )
        return data, self.labels[i], i

    def decoded(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 of image ``i`` as training decodes it (for the statistics)."""
        if self.split is not None:
            return self.split.images[i].permute(1, 2, 0).numpy()
        return decode_image(self.files[i], self.image_size)

    def __len__(self) -> int:
        return len(self.labels) if self.split is None else len(self.split)


def _source(src: str, download_dir: Path) -> tuple[str, Path, str]:
    """``(dataset, folder, layout)`` for SRC: ``cifar10``/``cifar100`` (downloaded when missing) or a folder
    (torchvision's CIFAR files or an ImageFolder tree)."""
    if src in ("cifar10", "cifar100"):
        folder = download_dir / src
        if detect_layout(src, folder) is None:
            download_torchvision_cifar(src, folder)
        return src, folder, str(detect_layout(src, folder))
    folder = Path(src).expanduser()
    for name in ("cifar10", "cifar100"):
        if detect_layout(name, folder) == "torchvision":
            return name, folder, "torchvision"
    if detect_layout("imagefolder", folder) is None:
        raise DatasetError(f"Nothing to convert in {folder}.\n{layouts_help('imagefolder', folder)}")
    return "imagefolder", folder, "imagefolder"


def _encoders(dataset: str, folder: Path, layout: str, image_size: int | None) -> dict[str, _EncodeItem]:
    """One encoder per source split (``train``, and ``test`` when there is one)."""
    out = {}
    for split in ("train", "test"):
        if layout == "torchvision":
            decoded = load_torchvision_cifar(dataset, folder, train=split == "train")
            out[split] = _EncodeItem(decoded.classes, split=decoded)
        elif (folder / split).is_dir():
            classes, files, labels = find_image_files(folder / split)
            out[split] = _EncodeItem(classes, files=files, labels=labels, image_size=image_size)
    test = out.get("test")
    if test is not None and test.classes != out["train"].classes:
        raise DatasetError(
            f"Class folders differ between train ({out['train'].classes}) and test ({test.classes})."
        )
    return out


def _paths(encoder: _EncodeItem, root: Path, split: str) -> list[str]:
    if encoder.split is not None:
        return list(encoder.split.paths)
    return [str(f.relative_to(root / split)) for f in encoder.files]


def _fingerprint(folder: Path, options: dict[str, Any]) -> str:
    """Changes when a source file or an option does (names, sizes and modification times)."""
    h = hashlib.sha1(json.dumps(options, sort_keys=True).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        st = path.stat()
        h.update(f"|{path.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _statistics(encoder: _EncodeItem, indices: torch.Tensor, max_images: int, seed: int) -> dict[str, list]:
    """Channel mean/std in [0, 1] units over the training images (a seeded sample of ``max_images`` when
    there are more: ImageNet-sized sets don't need every image for six numbers)."""
    if len(indices) > max_images:
        pick = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:max_images]
        indices = indices[pick.sort().values]
    threads = min(8, 2 * (os.cpu_count() or 1))

    def chunks():
        with ThreadPoolExecutor(threads) as pool:
            for part in indices.split(2048):
                arrays = list(pool.map(encoder.decoded, part.tolist()))
                yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (n, 3, H, W) uint8

    mean, std = channel_moments(chunks())
    return {"mean": mean, "std": std, "images": len(indices)}


def _prepare_output(out: Path, fingerprint: str, overwrite: bool) -> bool:
    """Make ``out`` ready to write; ``False`` when it already holds this exact conversion."""
    meta_path, marker = out / META_FILE, out / INCOMPLETE_MARKER
    if marker.exists():
        print(f"{out} is a half-written conversion (it was stopped): deleting it and writing it again.")
    elif meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fingerprint and meta.get("format") == SHARD_FORMAT and not overwrite:
            print(f"{out} is up to date (same source files and options): nothing to do.")
            return False
        print(f"{out} holds an older conversion (other files or options): writing it again.")
    elif out.exists() and any(out.iterdir()):
        raise DatasetError(
            f"{out} is not empty and holds no lit_vision shards: choose an empty or new folder for OUT."
        )
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    marker.write_text(fingerprint)
    return True


def _write_splits(
    optimize: Callable[..., Any],
    splits: dict[str, tuple[_EncodeItem, torch.Tensor]],
    out: Path,
    chunk_bytes: str,
    workers: int | None,
) -> dict[str, int]:
    """Each split's images (``encoder``, ``indices``) as shards in ``out/<split>`` (``optimize``: litdata's),
    in the order given; returns the image count of every split written (an empty one, ``val_size: 0``, is
    not)."""
    counts = {}
    for name, (encoder, indices) in splits.items():
        if len(indices) == 0:
            continue  # val_size: 0
        print(f"{name}: {len(indices)} images -> {out / name}", flush=True)
        optimize(
            fn=encoder,
            inputs=indices.tolist(),
            output_dir=str(out / name),
            chunk_bytes=chunk_bytes,
            num_workers=workers or min(4, os.cpu_count() or 1),
            mode="overwrite",
            # the order given, so chunk k holds the same images on every conversion (reproducible shards)
            keep_data_ordered=True,
            reorder_files=False,
        )
        counts[name] = len(indices)
    return counts


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    """``meta.json``, written last: the conversion is complete once it is there and the marker is gone."""
    tmp = out / f"{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out / META_FILE)  # atomic: a reader sees no meta.json or a whole one
    (out / INCOMPLETE_MARKER).unlink()


def convert(
    src: str,
    out: str | Path,
    val_size: int | float = 5000,
    seed: int = 0,
    image_size: int | None = None,
    workers: int | None = None,
    chunk_bytes: str = "64MB",
    stats_images: int = 50_000,
    download_dir: str | Path = "data",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the shards of ``src`` into ``out`` (see the module doc); return the metadata."""
    from lit_vision.data.streaming import optimize  # litdata, an optional extra: imported when needed

    out = Path(out).expanduser()
    dataset, folder, layout = _source(src, Path(download_dir).expanduser())
    options = {"val_size": val_size, "seed": seed, "image_size": image_size, "format": SHARD_FORMAT}
    fingerprint = _fingerprint(folder, options)
    if not _prepare_output(out, fingerprint, overwrite):
        return json.loads((out / META_FILE).read_text())

    encoders = _encoders(dataset, folder, layout, image_size)
    train = encoders["train"]
    train_idx, val_idx = seeded_split(len(train), val_size, seed, where=str(folder))
    # Training items in a seeded random order, not the source's class-by-class order: litdata shuffles
    # the order of shard files and the items inside each, so a batch comes from one or two files; stored
    # by class, every batch would hold one class.
    train_order = training_order(len(train), val_size, seed, where=str(folder))
    first = train.decoded(0).shape
    for encoder in encoders.values():
        encoder.expected = first
    splits = {"train": (train, train_order), "val": (train, val_idx)}
    if "test" in encoders:
        splits["test"] = (encoders["test"], torch.arange(len(encoders["test"])))
    counts = _write_splits(optimize, splits, out, chunk_bytes, workers)
    paths_dir = out / "paths"
    paths_dir.mkdir()
    (paths_dir / "train.txt").write_text("\n".join(_paths(train, folder, "train")) + "\n")
    if "test" in encoders:
        (paths_dir / "test.txt").write_text("\n".join(_paths(encoders["test"], folder, "test")) + "\n")
    stats = _statistics(train, train_idx, stats_images, seed)
    meta = {
        "format": SHARD_FORMAT,
        "fingerprint": fingerprint,
        "source": str(folder.resolve()),
        "dataset": dataset,
        "classes": list(train.classes),
        "mean": stats["mean"],
        "std": stats["std"],
        "stats_images": stats["images"],
        "image_size": image_size,
        "shape": [int(first[2]), int(first[0]), int(first[1])],  # (3, H, W) of every decoded image
        "val_size": val_size,
        "seed": seed,
        "source_train_size": len(train),
        "counts": counts,
    }
    _write_meta(out, meta)
    return meta


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m lit_vision.data.shards",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("src", help="ImageFolder tree, torchvision CIFAR folder, or cifar10 / cifar100")
    parser.add_argument("out", help="output folder (local; copy it to a bucket afterwards)")
    parser.add_argument(
        "--val-size", type=float, default=5000, help="held-out images (a count, or a fraction < 1; 0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="decode size of every image (resize + centre crop)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="conversion processes (default min(4, CPUs))"
    )
    parser.add_argument("--chunk-bytes", default="64MB", help="size of one shard file (default 64MB)")
    parser.add_argument(
        "--stats-images",
        type=int,
        default=50_000,
        help="training images sampled for mean/std (default 50000)",
    )
    parser.add_argument("--download-dir", default="data", help="where cifar10/cifar100 are downloaded")
    parser.add_argument("--overwrite", action="store_true", help="write OUT again even when it is up to date")
    args = parser.parse_args(argv)
    val_size: int | float = int(args.val_size) if args.val_size >= 1 or args.val_size == 0 else args.val_size
    with exit_on_error(DatasetError, ImportError, ValueError):
        meta = convert(
            args.src,
            args.out,
            val_size,
            args.seed,
            args.image_size,
            args.workers,
            args.chunk_bytes,
            args.stats_images,
            args.download_dir,
            args.overwrite,
        )
    print(f"{args.out}: {meta['counts']} images, {len(meta['classes'])} classes")
    return meta


if __name__ == "__main__":
    main()
