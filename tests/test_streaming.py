"""The streaming back-end: conversion to litdata shards, the same pixels and split as the memory back-end,
2-process DDP sharding, mid-epoch resume, and clear errors for half-written or damaged shards."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, ShardItemLog, make_imagefolder, make_torchvision_cifar10
from lightning.pytorch.utilities.exceptions import SIGTERMException
from test_distributed import DDP_CPU, QUIET, read_ranks, run_train

from lit_vision.cli import main
from lit_vision.data import DatasetError, ImageDataModule
from lit_vision.data.shard_format import INCOMPLETE_MARKER
from lit_vision.data.shards import convert
from lit_vision.data.splits import seeded_split

VAL_SIZE = 13  # 57 training images -> 44 train + 13 val; 21 test images: nothing divides evenly


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    """(image folder, its shards): 3 classes x 19 train + 7 test images, converted once for the module."""
    root = tmp_path_factory.mktemp("streaming")
    data = make_imagefolder(root / "data", 3, n_train=19, n_test=7)
    # small chunks: several shard files per split, so order and sharding cross file boundaries
    convert(str(data), root / "shards", val_size=VAL_SIZE, workers=1, chunk_bytes="20kb")
    return data, root / "shards"


def datamodules(data: Path, shards: Path, cache: Path, **kwargs) -> tuple[ImageDataModule, ImageDataModule]:
    common = dict(dataset="imagefolder", val_size=VAL_SIZE, batch_size=8, cache_dir=cache, **kwargs)
    memory = ImageDataModule(data_dir=data, **common)
    streaming = ImageDataModule(data_dir=shards, backend="streaming", num_workers=0, **common)
    for dm in (memory, streaming):
        dm.prepare_data()
        dm.setup("fit")
    return memory, streaming


def collect(loader) -> tuple[torch.Tensor, ...]:
    batches = list(loader)
    return tuple(torch.cat(parts) for parts in zip(*batches, strict=True))


def test_conversion_round_trip_matches_the_memory_decode(converted, tmp_path: Path) -> None:
    """Shards hold the memory back-end's split, pixels, labels, statistics, classes and paths."""
    data, shards = converted
    memory, streaming = datamodules(data, shards, tmp_path / "cache")
    assert len(list(shards.glob("train/chunk-*.bin"))) > 1
    assert streaming.classes == memory.classes and streaming.num_classes == 3
    assert streaming.mean == pytest.approx(memory.mean, abs=1e-12)
    assert streaming.std == pytest.approx(memory.std, abs=1e-12)
    assert streaming.input_size == memory.input_size == 32

    from lit_vision.data.streaming import ShardDataset

    ordered_train = ShardDataset(streaming._backend.store, "train", None, return_index=True)
    images, labels, index = (torch.stack(t) for t in zip(*(ordered_train[i] for i in range(44)), strict=True))
    # stored in the seeded training order, not class by class: the memory split's images, shuffled
    assert torch.equal(index.sort().values, memory.split("train").indices) and not torch.equal(
        index, memory.split("train").indices
    )
    assert torch.equal(images, memory.split("train").images[index])
    assert torch.equal(labels, memory.split("train").targets[index])
    assert torch.equal(streaming.train_images(5), memory.train_images(5))

    for split in ("val", "test"):
        loader = getattr(streaming, f"{split}_dataloader")()
        got_images, got_labels = collect(loader)
        want_images, want_labels = collect(getattr(memory, f"{split}_dataloader")())
        assert torch.equal(got_images, want_images) and torch.equal(got_labels, want_labels), split

    assert streaming.predict_paths() == memory.predict_paths()  # the test split's files, in order
    # training batches: uint8 (B, 3, H, W) as in memory, each train image at most once per epoch
    train = collect(streaming.train_dataloader())
    assert train[0].dtype == torch.uint8 and train[0].shape == (40, 3, 32, 32)  # 5 full batches of 8


def test_torchvision_cifar_files_convert_losslessly(tmp_path: Path, monkeypatch) -> None:
    """torchvision's CIFAR pickles -> PNG items: the same pixels, labels and paths as the memory back-end."""
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)  # generated files, not the real md5s
    data = make_torchvision_cifar10(tmp_path / "cifar", n_train=50, n_test=20)
    meta = convert(str(data), tmp_path / "shards", val_size=10, workers=1)
    assert meta["dataset"] == "cifar10" and meta["counts"] == {"train": 40, "val": 10, "test": 20}
    common = dict(dataset="cifar10", val_size=10, batch_size=8, cache_dir=tmp_path / "cache")
    memory = ImageDataModule(data_dir=data, **common)
    streaming = ImageDataModule(data_dir=tmp_path / "shards", backend="streaming", num_workers=0, **common)
    for dm in (memory, streaming):
        dm.setup("fit")
    for split in ("val", "test"):
        got = collect(getattr(streaming, f"{split}_dataloader")())
        want = collect(getattr(memory, f"{split}_dataloader")())
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), split
    assert streaming.predict_paths() == memory.predict_paths() and streaming.classes == memory.classes


def test_training_batches_mix_the_classes(tmp_path: Path) -> None:
    """A folder lists its images class by class. Stored in that order, litdata's shuffle (shard files, then
    items within each) would fill each batch with one class and a run would train at chance. 2 classes x
    300 images in one shard file, larger than litdata's default item window of 256: every training batch
    holds both classes, and an epoch's first batch draws from the whole file."""
    from lit_vision.data.streaming import ShardDataset, ShardStore, make_streaming_loader

    data = make_imagefolder(tmp_path / "data", 2, n_train=300, n_test=None, size=8)
    convert(str(data), tmp_path / "shards", val_size=40, workers=1)
    store = ShardStore(tmp_path / "shards", tmp_path / "cache")
    stored = ShardDataset(store, "train", None, return_index=True)
    place = {int(stored[i][2]): i for i in range(len(stored))}  # source index -> position in the file
    assert len(place) == 560 and len(list((tmp_path / "shards" / "train").glob("chunk-*.bin"))) == 1
    first_labels = torch.stack([stored[i][1] for i in range(32)])
    assert 0 < int(first_labels.sum()) < 32  # the file itself is not stored class by class

    loader = make_streaming_loader(store, "train", 32, True, None, 0, 0, None, True, False)
    batches = list(loader)
    assert len(batches) == 560 // 32
    for _, labels, _ in batches:
        assert 4 <= int(labels.sum()) <= 28, labels.tolist()  # both classes (binomial: about 16 of 32)
    # the items are permuted over the whole file, not within windows of 256 positions
    spread = [place[int(i)] for i in batches[0][2]]
    assert max(spread) - min(spread) > 256, sorted(spread)


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_counts_every_image_once_on_any_grid(converted, tmp_path: Path, workers: int) -> None:
    """val/test under 1-3 ranks: every image exactly once, shared out image by image (not litdata's whole
    batches with the rest on the last rank), and ``len()`` equal to the batches the workers yield."""
    from litdata.utilities.env import _DistributedEnv

    from lit_vision.data.streaming import ShardStore, make_streaming_loader

    _, shards = converted
    store = ShardStore(shards, tmp_path)
    grids = ((1, 4), (2, 16), (3, 4)) if workers == 0 else ((3, 4),)  # worker processes start slowly
    for split, n in (("val", VAL_SIZE), ("test", 21)):
        for world, batch in grids:
            seen, sizes = [], []
            for rank in range(world):
                loader = make_streaming_loader(
                    store, split, batch, False, None, 0, workers, None, True, False
                )
                loader.dataset.distributed_env = _DistributedEnv(
                    world, rank, 1
                )  # what DDP rank `rank` detects
                batches = [b[2].tolist() for b in loader]
                assert len(loader) == len(batches) > 0, (split, world, rank)
                sizes.append(sum(len(b) for b in batches))
                seen += [i for b in batches for i in b]
            assert sorted(seen) == sorted(set(seen)) and len(seen) == n, (split, world)
            assert max(sizes) - min(sizes) <= workers + 1 + n % world, (split, world, sizes)


def test_split_settings_must_match_the_conversion(converted, tmp_path: Path) -> None:
    _, shards = converted
    dm = ImageDataModule("imagefolder", shards, backend="streaming", val_size=12, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match=r"val_size=13, seed=0.*data\.val_size=12"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="device_resident needs backend: memory"):
        ImageDataModule("imagefolder", shards, backend="streaming", device_resident=True)


def test_rerun_is_safe_and_half_written_output_is_rewritten(tmp_path: Path, capsys) -> None:
    data = make_imagefolder(tmp_path / "data", 2, n_train=6, n_test=None)
    out = tmp_path / "shards"
    convert(str(data), out, val_size=0, workers=1)
    chunk = next(out.glob("train/chunk-*.bin"))
    written = chunk.stat().st_mtime_ns
    convert(str(data), out, val_size=0, workers=1)
    assert "up to date" in capsys.readouterr().out and chunk.stat().st_mtime_ns == written

    # a conversion stopped half-way: marker present, no meta.json -> never used, rewritten on the next run
    (out / "meta.json").unlink()
    (out / INCOMPLETE_MARKER).write_text("stopped")
    dm = ImageDataModule("imagefolder", out, backend="streaming", val_size=0, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetError, match="conversion was stopped before the end"):
        dm.prepare_data()
    meta = convert(str(data), out, val_size=0, workers=1)
    assert "half-written" in capsys.readouterr().out
    assert meta["counts"] == {"train": 12} and not (out / INCOMPLETE_MARKER).exists()
    assert (out / "meta.json").is_file()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="holds no lit_vision shards"):
        convert(str(data), foreign, val_size=0, workers=1)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_damaged_shards_give_clear_errors(converted, tmp_path: Path) -> None:
    _, original = converted
    cache = tmp_path / "cache"

    def copy(name: str) -> Path:
        shards = tmp_path / name
        shutil.copytree(original, shards)
        return shards

    def streaming(shards: Path | str) -> ImageDataModule:
        return ImageDataModule(
            "imagefolder",
            shards,
            backend="streaming",
            val_size=VAL_SIZE,
            batch_size=8,
            num_workers=0,
            cache_dir=cache,
        )

    # a truncated shard file (a partial copy): refused before training, by name
    truncated = copy("truncated")
    chunk = sorted(truncated.glob("train/chunk-*.bin"))[1]
    chunk.write_bytes(chunk.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=f"Shard {chunk} is 1000 bytes"):
        streaming(truncated).prepare_data()

    # same size, damaged bytes: the error names the shard file and the item
    damaged = copy("damaged")
    chunk = sorted(damaged.glob("train/chunk-*.bin"))[0]
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2 :] = bytes(len(raw) - len(raw) // 2)
    chunk.write_bytes(bytes(raw))
    dm = streaming(damaged)
    dm.prepare_data()
    dm.setup("fit")
    with pytest.raises(DatasetError) as damage:
        collect(dm.train_dataloader())
    assert str(chunk) in str(damage.value) and "item" in str(damage.value)

    # an index that declares pickled items is never read (unpickling runs code)
    pickled = copy("pickled")
    index_file = pickled / "val" / "index.json"
    index = json.loads(index_file.read_text())
    index["config"]["data_format"] = ["pickle", "int", "int"]
    index_file.write_text(json.dumps(index))
    with pytest.raises(DatasetError, match="refusing to read them"):
        streaming(pickled).prepare_data()

    # shards of an older format (format 1 stored the training images class by class) are refused
    old_format = copy("old_format")
    meta = json.loads((old_format / "meta.json").read_text())
    (old_format / "meta.json").write_text(json.dumps(meta | {"format": 1}))
    with pytest.raises(DatasetError, match=r"format 1, this version reads format 2: convert the dataset"):
        streaming(old_format).setup("fit")

    # a cut or emptied index (an interrupted copy) is an error that says so, not a crash inside a dict
    for name, text in (("cut", index_file.read_text()[:40]), ("no_config", '{"chunks": [], "config": null}')):
        broken = copy(name)
        (broken / "val" / "index.json").write_text(text)
        with pytest.raises(DatasetError, match="not a whole litdata index"):
            streaming(broken).prepare_data()

    with pytest.raises(DatasetError, match=r"python -m lit_vision\.data\.shards SRC"):
        streaming(tmp_path / "nothing").setup("fit")
    # a URL that cannot be fetched says which file and why (no network needed: an unknown scheme)
    with pytest.raises(DatasetError, match=r"Cannot fetch nosuchscheme://bucket/x/meta\.json"):
        streaming("nosuchscheme://bucket/x").setup("fit")


def test_litdata_is_imported_only_for_streaming() -> None:
    code = (
        "import sys, lit_vision.cli, lit_vision.data, lit_vision.predict_images\n"
        "from lit_vision.data import ImageDataModule\n"
        "ImageDataModule()\n"
        "assert 'litdata' not in sys.modules, 'litdata imported by the memory back-end'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def streaming_args(shards: Path, runs: Path) -> list[str]:
    return [
        "--config=configs/cifar10_compact.yaml",
        "--data.dataset=imagefolder",
        f"--data.data_dir={shards}",
        "--data.backend=streaming",
        f"--data.val_size={VAL_SIZE}",
        "--data.batch_size=8",
        "--data.num_workers=0",  # ShardItemLog sees the items decoded in this process
        "--data.alternating_flip=true",  # train batches then carry each image's index: the log records it
        f"--trainer.logger.init_args.save_dir={runs}",
        *QUIET,
    ]


def test_stop_mid_epoch_resumes_with_the_right_samples(converted, tmp_path: Path) -> None:
    """A SIGTERM mid-epoch, then ``--ckpt_path last``: the resumed run trains on exactly the samples the
    straight run trained on after that step, in its order (litdata's loader state, saved by Lightning)."""
    _, shards = converted
    log = "--trainer.callbacks=" + json.dumps([{"class_path": "helpers.ShardItemLog"}])
    args = ["fit", *streaming_args(shards, tmp_path / "runs"), "--trainer.max_epochs=3"]
    main([*args, log, "--trainer.logger.init_args.name=straight"])
    straight = ShardItemLog.latest.trained_indices
    assert len(straight) == 3 * 5 * 8  # 3 epochs of 5 full batches (44 images, 4 dropped)
    for epoch in range(3):  # each epoch: distinct images of the train split, in a new order
        chunk = straight[epoch * 40 : (epoch + 1) * 40]
        assert len(set(chunk)) == 40
    assert straight[:40] != straight[40:80]

    stop = "--trainer.callbacks=" + json.dumps(
        [{"class_path": "helpers.ShardItemLog"}, {"class_path": "helpers.StopAt", "init_args": {"step": 7}}]
    )
    with pytest.raises(SIGTERMException):
        main([*args, stop])  # mid-epoch 1 (steps 6..10)
    before_stop = ShardItemLog.latest.trained_indices
    resumed = main([*args, log, "--ckpt_path=last"])
    assert Path(resumed.trainer.ckpt_path).name == "interrupted.ckpt"
    assert resumed.trainer.global_step == 15
    assert before_stop + ShardItemLog.latest.trained_indices == straight


@pytest.mark.slow  # three 2-process runs: about a minute
def test_two_process_ddp_sees_each_image_once(converted, tmp_path: Path) -> None:
    """gloo DDP over shards: in every epoch the ranks train on disjoint images (the tail that does not fill
    a batch on every rank is dropped), validation counts every held-out image once, the ranks agree on
    every metric; then test and predict through the same shards."""
    _, shards = converted
    out = tmp_path / "ranks"
    callbacks = json.dumps(
        [
            {"class_path": "helpers.RankRecorder", "init_args": {"out_dir": str(out)}},
            {"class_path": "helpers.ShardItemLog", "init_args": {"out_dir": str(out)}},
        ]
    )
    common = streaming_args(shards, tmp_path / "runs")
    epochs = 3  # OneCycleLR (the config's) needs more than 4 steps: 2 per epoch here
    fit = [
        "fit",
        *common,
        *DDP_CPU,
        f"--trainer.max_epochs={epochs}",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.logger.init_args.version=ddp",
        f"--trainer.callbacks={callbacks}",
    ]
    run_train(fit, tmp_path)
    ranks = read_ranks(out, "fit")
    for name in ("train/acc", "val/acc", "val/loss"):
        assert ranks[0]["metrics"][name] == ranks[1]["metrics"][name], name
    items = [json.loads((out / f"rank{r}-items.json").read_text()) for r in range(2)]
    train_split = set(seeded_split(57, VAL_SIZE, seed=0)[0].tolist())
    for epoch in range(epochs):
        per_rank = [[i for split, e, i in rank if split == "train" and e == epoch] for rank in items]
        assert [len(p) for p in per_rank] == [16, 16]  # 22 images per rank: 2 full batches of 8
        merged = per_rank[0] + per_rank[1]
        assert len(set(merged)) == 32, f"epoch {epoch}: an image went to both ranks or twice to one"
        assert set(merged) <= train_split
        val = [sum(1 for split, e, _ in rank if split == "val" and e == epoch) for rank in items]
        assert sum(val) == VAL_SIZE, f"epoch {epoch}: every held-out image exactly once across ranks"

    best = tmp_path / "runs" / "cifar10_compact" / "ddp" / "checkpoints" / "best.ckpt"
    run_train(
        ["test", *common, *DDP_CPU, f"--ckpt_path={best}", f"--trainer.callbacks={callbacks}"], tmp_path
    )
    assert sum(rec["seen"]["test"] for rec in read_ranks(out, "test")) == 21  # no padding duplicates

    predictions = tmp_path / "predictions.csv"
    writer = json.dumps(
        [{"class_path": "lit_vision.callbacks.PredictionWriter", "init_args": {"output_dir": str(tmp_path)}}]
    )
    main(["predict", *common, f"--ckpt_path={best}", f"--trainer.callbacks={writer}"])
    with open(predictions, newline="") as f:
        rows = list(csv.DictReader(f))
    memory = ImageDataModule("imagefolder", converted[0], val_size=VAL_SIZE, cache_dir=tmp_path / "cache")
    memory.setup("test")
    assert [r["path"] for r in rows] == memory.predict_paths()
