"""The data back-ends behind ``ImageDataModule`` (``lit_vision.data.backend``): memory and streaming serve the
same classes, statistics, split and images from the same tiny data, and what only one of them can do is
refused by the other with a message naming the back-end to use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_imagefolder

from lit_vision.data import DatasetError, ImageDataModule
from lit_vision.data.backend import DataBackend, LoaderRequest
from lit_vision.data.memory_backend import MemoryBackend
from lit_vision.data.shards import convert

VAL_SIZE = 5  # 2 classes x 9 train images -> 13 train + 5 val; 2 x 3 test images


@pytest.fixture(scope="module")
def data_and_shards(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("backends")
    data = make_imagefolder(root / "data", 2, n_train=9, n_test=3, size=16)
    convert(str(data), root / "shards", val_size=VAL_SIZE, workers=1)
    return data, root / "shards"


def backends(data: Path, shards: Path, cache: Path) -> tuple[DataBackend, DataBackend]:
    from lit_vision.data.streaming_backend import StreamingBackend

    memory = MemoryBackend(
        "imagefolder", data, cache, None, VAL_SIZE, 0, download=False, device_resident=False
    )
    streaming = StreamingBackend("imagefolder", str(shards), cache, None, VAL_SIZE, 0)
    return memory, streaming


def request(split: str, **kwargs) -> LoaderRequest:
    settings = dict(train=False, predict=False, batch_size=4, num_workers=0, seed=0, transform=None)
    settings |= dict(return_index=True, pin_memory=False, trainer=None)
    return LoaderRequest(split=split, **(settings | kwargs))  # type: ignore[arg-type]


def collect(loader) -> tuple[torch.Tensor, ...]:
    return tuple(torch.cat(parts) for parts in zip(*list(loader), strict=True))


def test_both_backends_serve_the_same_data(data_and_shards, tmp_path: Path) -> None:
    memory, streaming = backends(*data_and_shards, tmp_path / "cache")
    assert isinstance(memory, DataBackend) and isinstance(streaming, DataBackend)
    # known before setup: classes and whether there is a test split
    assert memory.classes == streaming.classes == ["class_00", "class_01"]
    assert memory.has_test_split and streaming.has_test_split
    (mean_m, std_m), (mean_s, std_s) = memory.setup("fit", 4), streaming.setup("fit", 4)
    assert mean_s == pytest.approx(mean_m, abs=1e-12) and std_s == pytest.approx(std_m, abs=1e-12)
    assert memory.input_size == streaming.input_size == 16
    assert memory.source_train_size == streaming.source_train_size == 18
    for name in ("val", "test"):
        assert memory.has_split(name) and streaming.has_split(name)  # type: ignore[arg-type]
    assert torch.equal(memory.train_images(5), streaming.train_images(5))
    assert len(memory.train_images(None)) == len(streaming.train_images(None)) == 13
    for source in ("train", "test"):
        assert memory.paths(source) == streaming.paths(source)  # type: ignore[arg-type]
    for split in ("val", "test"):  # evaluation: the same images, labels and indices, in the same order
        got, want = collect(streaming.loader(request(split))), collect(memory.loader(request(split)))
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), split
    # training: uint8 batches of the train split's images, the last incomplete batch dropped (13 -> 12)
    for backend in (memory, streaming):
        images, _, index = collect(backend.loader(request("train", train=True)))
        assert images.dtype == torch.uint8 and images.shape == (12, 3, 16, 16)
        assert len(set(index.tolist())) == 12, "an image twice in one epoch"
        assert set(index.tolist()) <= set(memory.split("train").indices.tolist())


def test_both_backends_refuse_a_batch_larger_than_the_train_split(data_and_shards, tmp_path: Path) -> None:
    for backend in backends(*data_and_shards, tmp_path / "cache"):
        with pytest.raises(DatasetError, match="batch_size=14 is larger than the 13 training images"):
            backend.setup("fit", 14)
        backend.setup("test", 14)  # evaluation drops no batch: nothing to refuse


def test_what_only_memory_does_is_refused_by_streaming(data_and_shards, tmp_path: Path) -> None:
    memory, streaming = backends(*data_and_shards, tmp_path / "cache")
    with pytest.raises(RuntimeError, match="Call setup"):  # the decoded tensors exist after setup
        memory.check_ready()
    streaming.check_ready()  # the shards are read by the loader itself: nothing to wait for
    assert len(collect(streaming.loader(request("test")))[0]) == 6
    memory.setup("fit", 4)
    streaming.setup("fit", 4)
    assert len(memory.split("val").indices) == VAL_SIZE
    with pytest.raises(RuntimeError, match=r"split\(\) reads the decoded tensors of backend: memory"):
        streaming.split("val")
    resident = memory.resident_images("train", torch.device("cpu"))
    assert resident is memory.resident_images("train", torch.device("cpu"))  # copied to the device once
    with pytest.raises(RuntimeError, match="device_resident needs backend: memory"):
        streaming.resident_images("train", torch.device("cpu"))


def test_the_datamodule_holds_the_backend_it_is_asked_for(data_and_shards, tmp_path: Path) -> None:
    data, shards = data_and_shards
    common = dict(dataset="imagefolder", val_size=VAL_SIZE, batch_size=4, cache_dir=tmp_path / "cache")
    memory = ImageDataModule(data_dir=data, **common)
    streaming = ImageDataModule(data_dir=shards, backend="streaming", **common)
    assert (
        isinstance(memory._backend, MemoryBackend) and type(streaming._backend).__name__ == "StreamingBackend"
    )
    # loader workers by default only where each image is decoded in them (batched memory: tensor slices)
    assert memory.num_workers == 0 and streaming.num_workers >= 1
    with pytest.raises(RuntimeError, match=r"split\(\) reads the decoded tensors of backend: memory"):
        streaming.split("train")
