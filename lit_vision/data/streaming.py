"""The streaming back-end (``data.backend: streaming``): litdata shards, streamed from a folder or a bucket.

``python -m lit_vision.data.shards`` writes the shards (``lit_vision.data.shards``); this module reads them.
litdata's ``StreamingDataset`` shards the items by rank and worker, shuffles them per epoch from a seed, and
its ``StreamingDataLoader`` keeps a resumable state that Lightning stores in every checkpoint; this module
adds what the memory back-end does per sample: decode (and resize) the encoded bytes in the workers, so
batches arrive as uint8 (B, 3, H, W), exactly as the memory back-end's, and the datamodule's batched
augmentation and normalization run on them unchanged.

litdata is an optional extra (``pip install 'lit-vision[streaming]'``); this module is the one that imports
it (``shards`` takes ``optimize`` from here), and it is imported only when streaming is asked for. Everything
this project reads of litdata beyond its public ``StreamingDataset``/``StreamingDataLoader`` is in this file:
the shard layout (``index.json``, documented by litdata) and its downloader for remote ``meta.json``.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import warnings
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_vision.data.shard_format import INCOMPLETE_MARKER, ITEM_FORMAT, META_FILE, SHARD_FORMAT
from lit_vision.data.sources import DatasetError, decode_image

# litdata asks PyPI for a newer version of itself in optimize(); on an offline cluster node that request
# waits for its 30 s timeout. Set before the import (litdata reads it then); the user's own setting wins.
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")
try:
    from litdata import StreamingDataLoader, StreamingDataset, optimize
    from litdata.streaming.downloader import get_downloader
except ImportError as err:  # the datamodule imports this module only for data.backend: streaming
    raise ImportError(
        "data.backend: streaming and python -m lit_vision.data.shards need litdata: "
        "pip install 'lit-vision[streaming]'"
    ) from err

__all__ = ["ShardDataset", "ShardLoader", "ShardStore", "make_streaming_loader", "optimize"]

# Lightning warns that an IterableDataset's __len__ "could be inaccurate" with several workers unless each
# worker is configured independently: litdata's StreamingDataset is (it shards by rank and worker itself).
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
# Lightning cannot list the sample indices of an iterable loader's predict batches; PredictionWriter reads
# each image's index from the batch itself (return_index), so nothing is missing.
warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices fetched from your dataloader")

# litdata shuffles the order of shard files and, inside each, the items within windows of 256 (0.2.7x's
# default; older releases permute the whole file and lack the option). Training asks for the whole file:
# the items are JPEG bytes decoded one by one, so a full permutation costs nothing, and fixed windows
# would put the same images together in a batch every epoch.
_FULL_ITEM_SHUFFLE = (
    {"item_shuffle_window": 0}
    if "item_shuffle_window" in inspect.signature(StreamingDataset).parameters
    else {}
)

_INDEX = "index.json"  # litdata's per-split index: chunk files, their sizes, the items' data format


def is_remote(root: str) -> bool:
    """``s3://...``, ``gs://...`` and other URLs (litdata downloads their chunks into a local cache)."""
    return "://" in root


class ShardStore:
    """The shards written by ``python -m lit_vision.data.shards`` at ``root`` (a folder or a URL).

    Reads ``meta.json`` (classes, statistics, the split), the source paths, and checks each split's
    ``index.json`` before any item is read: the items must have this project's format (so a folder that
    declares pickled items is never unpickled), and local chunk files must have the size the index says.
    """

    def __init__(self, root: str | Path, cache_dir: Path) -> None:
        self.root = str(root).rstrip("/")
        self.cache_dir = Path(cache_dir) / "shards-meta"
        #: per checked split: its shard files in litdata's chunk order (to name one in an error)
        self.chunk_files: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"ShardStore({self.root!r})"

    def _file(self, name: str) -> Path | None:
        """A file of the store on local disk (downloaded when the store is remote), or ``None``."""
        if not is_remote(self.root):
            path = Path(self.root).expanduser() / name
            return path if path.is_file() else None
        local = self.cache_dir / self.root.replace("://", "/") / name
        local.parent.mkdir(parents=True, exist_ok=True)
        url = f"{self.root}/{name}"
        try:
            get_downloader(self.root, str(local.parent), []).download_file(url, str(local))
        except Exception as err:  # each storage client raises its own errors (missing, denied, offline)
            raise DatasetError(
                f"Cannot fetch {url} ({type(err).__name__}: {err}). Check the URL and the storage "
                "credentials in the environment, or copy the shards to a local folder."
            ) from err
        return local if local.is_file() else None

    @cached_property
    def meta(self) -> dict[str, Any]:
        """The conversion's ``meta.json``."""
        path = self._file(META_FILE)
        if path is None:
            half = not is_remote(self.root) and (Path(self.root).expanduser() / INCOMPLETE_MARKER).exists()
            why = "its conversion was stopped before the end" if half else "it holds no meta.json"
            raise DatasetError(
                f"{self.root} is not a complete lit_vision shard folder: {why}. Write it with\n"
                f"  python -m lit_vision.data.shards SRC {self.root}\n"
                "(SRC: an ImageFolder tree, torchvision's CIFAR folder, cifar10 or cifar100), or use "
                "data.backend: memory for an image folder."
            )
        meta = json.loads(path.read_text())
        if meta.get("format") != SHARD_FORMAT:
            raise DatasetError(
                f"{self.root} holds shards of format {meta.get('format')}, this version reads format "
                f"{SHARD_FORMAT}: convert the dataset again (python -m lit_vision.data.shards SRC OUT)."
            )
        return meta

    def has(self, split: str) -> bool:
        return split in self.meta["counts"]

    def split_dir(self, split: str) -> str:
        """The split's litdata folder (or URL), checked (see the class doc)."""
        if not self.has(split):
            raise DatasetError(f"{self.root} has no {split} shards (it has {sorted(self.meta['counts'])}).")
        location = f"{self.root}/{split}"
        if split not in self.chunk_files:
            self.chunk_files[split] = self._check(split, location)
        return location

    def _check(self, split: str, location: str) -> list[str]:
        index_file = self._file(f"{split}/{_INDEX}")
        if index_file is None:
            raise DatasetError(f"{location} has no {_INDEX}: the shards are incomplete; convert again.")
        try:
            index = json.loads(index_file.read_text())
            data_format = index["config"]["data_format"]
            chunks = list(index["chunks"])
        except (ValueError, KeyError, AttributeError, TypeError) as err:  # not JSON, or not litdata's layout
            raise DatasetError(
                f"{location}/{_INDEX} is not a whole litdata index ({type(err).__name__}: {err}): the shards "
                "are damaged or incomplete; convert again (python -m lit_vision.data.shards SRC OUT "
                "--overwrite)."
            ) from err
        if data_format != ITEM_FORMAT:
            raise DatasetError(
                f"{location}/{_INDEX} declares items of format {data_format}, not lit_vision's "
                f"{ITEM_FORMAT}: refusing to read them (other formats may unpickle code)."
            )
        files = [chunk["filename"] for chunk in chunks]
        if is_remote(self.root):
            return files  # litdata checks what it downloads
        folder = Path(location).expanduser()
        for chunk in chunks:
            path = folder / chunk["filename"]
            size = path.stat().st_size if path.is_file() else None
            if size != chunk["chunk_bytes"]:
                raise DatasetError(
                    f"Shard {path} is {'missing' if size is None else f'{size} bytes'}, its {_INDEX} says "
                    f"{chunk['chunk_bytes']} bytes: the file is damaged or was not copied whole. Copy it "
                    "again or convert again (python -m lit_vision.data.shards SRC OUT --overwrite)."
                )
        return files

    def paths(self, source: str) -> list[str]:
        """Image paths of a source split (``train``: the whole train split, val included; ``test``)."""
        path = self._file(f"paths/{source}.txt")
        if path is None:
            raise DatasetError(f"{self.root} has no paths/{source}.txt: convert the dataset again.")
        return path.read_text().splitlines()

    def read(self, split: str, count: int, image_size: int | None) -> Tensor:
        """The first ``count`` images of a split, uint8 (count, 3, H, W), decoded as training decodes them."""
        dataset = ShardDataset(self, split, image_size)  # in order, from the split's first image
        count = min(count, len(dataset))
        return torch.stack([dataset[i][0] for i in range(count)])


class ShardDataset(StreamingDataset):
    """A split of a ``ShardStore`` as a litdata ``StreamingDataset`` whose items are decoded in the loader's
    workers: ``(image, label)`` or, with ``return_index``, ``(image, label, source index)``; ``image`` is
    uint8 (3, H, W), resized to ``image_size`` when set, then passed through ``transform`` (a per-sample
    pipeline) when given.

    Args:
        store: the shards.
        split: ``train``, ``val`` or ``test``.
        image_size: decode size (resize + centre crop), ``None``: the images' own size.
        shuffle, seed, drop_last: litdata's (order per epoch from ``seed``; ``drop_last`` evens out ranks).
        transform: per-sample callable on the uint8 image.
        return_index: also return each image's index in its source split (alternating flip, predict).
        split_by_image: share the images out to ranks and workers one by one (evaluation). litdata shares
            out whole batches and gives the remainder to the last rank: a validation split smaller than
            ranks x batch would all run on one rank, and fewer batches than ranks leave a rank with none.
    """

    def __init__(
        self,
        store: ShardStore,
        split: str,
        image_size: int | None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
        return_index: bool = False,
        split_by_image: bool = False,
    ) -> None:
        self.split_by_image = split_by_image
        cache = store.cache_dir.parent / "shards-cache" if is_remote(store.root) else None
        super().__init__(
            store.split_dir(split),
            cache_dir=None if cache is None else str(cache),
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            **(_FULL_ITEM_SHUFFLE if shuffle else {}),
        )
        self.where = f"{store.root}/{split}"
        self.num_images = int(store.meta["counts"][split])
        self.chunk_files = store.chunk_files[split]
        self.image_size = image_size
        self.sample_transform = transform
        self.return_index = return_index

    def set_batch_size(self, batch_size: int) -> None:
        super().set_batch_size(1 if self.split_by_image else batch_size)

    def batches_here(self, num_workers: int, batch_size: int) -> int:
        """split_by_image: the batches this rank's workers yield: litdata's share-out with batches of one
        (whole shares per rank and worker, the remainder to the last rank), each worker batching its own."""
        n = self.num_images
        env = self.distributed_env
        world, rank = env.world_size, env.global_rank
        workers = max(1, num_workers)
        per_rank = n // world
        base, rem = divmod(per_rank, workers)
        per_worker = [base + (1 if i < rem else 0) for i in range(workers)]
        if rank == world - 1:
            per_worker[rem % workers] += n - per_rank * world
        return sum(math.ceil(k / batch_size) for k in per_worker)

    def __getitem__(self, index: Any) -> tuple[Tensor, ...]:
        chunk = getattr(index, "chunk_index", None)  # litdata's ChunkedIndex while iterating, else an int
        where = self.where if chunk is None else f"{self.where}/{self.chunk_files[chunk]}"
        try:
            data, label, source_index = super().__getitem__(index)
        except Exception as err:
            raise DatasetError(
                f"Cannot read item {getattr(index, 'index', index)} of shard {where} ({type(err).__name__}: "
                f"{err}): the file is damaged; copy it again or convert again (python -m lit_vision.data."
                "shards SRC OUT --overwrite)."
            ) from err
        image = decode_image(io.BytesIO(data), self.image_size, name=f"shard {where}, item {source_index}")
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (3, H, W) uint8
        if self.sample_transform is not None:
            image_t = self.sample_transform(image_t)
        label_t = torch.tensor(label, dtype=torch.int64)
        if self.return_index:
            return image_t, label_t, torch.tensor(source_index, dtype=torch.int64)
        return image_t, label_t


class ShardLoader(StreamingDataLoader):
    """litdata's ``StreamingDataLoader``, with its resume ending where the resumed epoch ends.

    After ``load_state_dict``, litdata replays the saved position until its epoch generator runs to the end;
    Lightning stops asking for batches once it has the epoch's ``len()`` of them, so that end never comes and
    the next epoch would replay the finished one again (an empty epoch). The first ``iter()`` after a restore
    is the resumed epoch; any later one starts a fresh epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resumed_epoch_pending = False

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        super().load_state_dict(obj)
        self._resumed_epoch_pending = True

    def __len__(self) -> int:
        dataset = self.dataset
        if isinstance(dataset, ShardDataset) and dataset.split_by_image:
            return dataset.batches_here(self.num_workers, self.batch_size or 1)
        return super().__len__()

    def __iter__(self) -> Any:
        if self.restore and not self._resumed_epoch_pending:
            self.restore = False  # the resumed epoch is over: reset and count a new epoch
        self._resumed_epoch_pending = False
        return super().__iter__()


def make_streaming_loader(
    store: ShardStore,
    split: str,
    batch_size: int,
    train: bool,
    image_size: int | None,
    seed: int,
    num_workers: int,
    transform: Callable[[Tensor], Tensor] | None,
    return_index: bool,
    pin_memory: bool,
) -> Any:
    """litdata's ``StreamingDataLoader`` over a split: for training shuffled from ``seed`` per epoch and
    ``drop_last`` (every rank gets the same number of full batches: DDP steps stay in lockstep, and an image
    is seen at most once per epoch across ranks); for evaluation in order with nothing dropped or repeated,
    so every image is counted exactly once across ranks."""
    dataset = ShardDataset(
        store,
        split,
        image_size,
        shuffle=train,
        seed=seed,
        drop_last=train,
        transform=transform,
        return_index=return_index,
        split_by_image=not train,
    )
    return ShardLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        drop_last=train,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
