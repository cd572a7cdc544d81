from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_imagefolder, make_torchvision_cifar10
from PIL import Image

from lit_vision.data import DatasetError, ImageDataModule, sources


def dm(data_dir: Path, **kw) -> ImageDataModule:
    kw.setdefault("dataset", "imagefolder")
    kw.setdefault("val_size", 12)
    kw.setdefault("batch_size", 8)
    module = ImageDataModule(data_dir=data_dir, **kw)
    return module


def test_imagefolder_setup_and_metadata(tiny_folder: Path) -> None:
    d = dm(tiny_folder)
    assert d.num_classes == 3 and d.classes == ["class_00", "class_01", "class_02"]  # known before setup
    d.prepare_data()
    d.setup("fit")
    assert d.layout == "imagefolder" and d.has_test_split
    assert len(d.split("train").indices) == 48 and len(d.split("val").indices) == 12
    x, y = next(iter(d.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 32, 32) and y.dtype == torch.int64


def test_train_images_are_a_sample_of_every_class(tiny_folder: Path) -> None:
    """A folder lists its images class by class; what a data-dependent init (airbench's whitening) and the
    augmentation preview read is a seeded sample of every class, from the train split only."""
    d = dm(tiny_folder)
    d.setup("fit")
    images = d.train_images(9)
    train = d.split("train")
    flat = train.images.flatten(1)
    where = [int((flat == image.flatten()).all(1).nonzero()[0]) for image in images]
    assert len(set(where)) == 9 and set(where) <= set(train.indices.tolist())
    assert set(train.targets[where].tolist()) == {0, 1, 2}
    assert torch.equal(d.train_images(9), images) and len(d.train_images()) == 48


def test_split_is_seeded_disjoint_and_complete(tiny_folder: Path) -> None:
    a, b, c = dm(tiny_folder, seed=1), dm(tiny_folder, seed=1), dm(tiny_folder, seed=2)
    for d in (a, b, c):
        d.setup("fit")
    for name in ("train", "val"):
        assert torch.equal(a.split(name).indices, b.split(name).indices)
    assert not torch.equal(a.split("val").indices, c.split("val").indices)
    both = torch.cat([a.split("train").indices, a.split("val").indices]).sort().values
    assert torch.equal(both, torch.arange(60))
    frac = dm(tiny_folder, val_size=0.25)
    frac.setup("fit")
    assert len(frac.split("val").indices) == 15


def test_mean_std_match_direct_computation(tiny_folder: Path) -> None:
    d = dm(tiny_folder)
    d.setup("fit")
    imgs = d.split("train").images[d.split("train").indices].double() / 255
    torch.testing.assert_close(
        torch.tensor(d.mean, dtype=torch.float64), imgs.mean((0, 2, 3)), rtol=1e-6, atol=1e-6
    )
    torch.testing.assert_close(
        torch.tensor(d.std, dtype=torch.float64), imgs.std((0, 2, 3), correction=0), rtol=1e-5, atol=1e-6
    )
    again = dm(tiny_folder)
    again.setup("fit")  # second time from the stats cache
    assert again.mean == d.mean and again.std == d.std


def test_loaders_drop_only_in_training(tiny_folder: Path) -> None:
    d = dm(tiny_folder, batch_size=7, eval_batch_size=5)
    d.setup("fit")
    train = list(d.train_dataloader())
    assert all(len(y) == 7 for _, y in train) and len(train) == 48 // 7
    val_targets = torch.cat([y for _, y in d.val_dataloader()])
    assert len(val_targets) == 12
    test = torch.cat([y for _, y in d.test_dataloader()])
    assert len(test) == 18 and torch.equal(test, torch.arange(3).repeat_interleave(6))
    pred_idx = torch.cat([b[2] for b in d.predict_dataloader()])
    assert torch.equal(pred_idx, torch.arange(18))  # every test image once, in order
    assert d.predict_paths()[0] == os.path.join("class_00", "0000.png")


def test_decode_cache_reused_and_invalidated(tiny_folder: Path, tmp_path: Path, monkeypatch) -> None:
    root = shutil.copytree(tiny_folder, tmp_path / "copy")
    calls = {"n": 0}
    real = sources.decode_image

    def counting(path: Path, size: int | None) -> np.ndarray:
        calls["n"] += 1
        return real(path, size)

    monkeypatch.setattr(sources, "decode_image", counting)
    dm(root).setup("fit")
    assert calls["n"] == 78  # 60 train + 18 test decoded once
    dm(root).setup("fit")
    assert calls["n"] == 78  # second run: served from the cache, nothing decoded
    img = root / "train" / "class_01" / "0003.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    os.utime(img, ns=(1, 1))  # a changed file with a different mtime and size
    d = dm(root)
    d.setup("fit")
    assert calls["n"] == 78 + 60  # train split decoded again, test split still cached
    pos = d.split("train").paths.index(os.path.join("class_01", "0003.png"))
    assert int(d.split("train").images[pos].sum()) == 0  # new content, not the stale cache


def test_torchvision_layout(tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import cifar

    root = make_torchvision_cifar10(tmp_path / "c10")
    with pytest.raises(DatasetError, match=r"incomplete or corrupted.*Delete that folder"):
        ImageDataModule("cifar10", root, batch_size=4, val_size=10).setup("fit")  # md5 sums differ
    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)
    d = ImageDataModule("cifar10", root, batch_size=4, val_size=10)
    assert d.layout == "torchvision"
    d.prepare_data()  # must not try to download: the files are there
    d.setup("fit")
    assert d.classes[0] == "airplane" and d.num_classes == 10
    assert len(d.split("train").indices) == 40
    assert len(torch.cat([y for _, y in d.test_dataloader()])) == 20


def test_cifar_configs_accept_an_imagefolder_copy(tiny_cifar10_folder: Path) -> None:
    d = ImageDataModule("cifar10", tiny_cifar10_folder, batch_size=8, val_size=20)
    assert d.layout == "imagefolder"
    d.setup("fit")
    assert d.num_classes == 10 and d.classes[-1] == "truck"


def test_download_impossible_lists_layouts(tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import CIFAR10

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(CIFAR10, "download", offline)
    d = ImageDataModule("cifar10", tmp_path / "nothing_here")
    with pytest.raises(DatasetError) as err:
        d.prepare_data()
    msg = str(err.value)
    assert "Could not download cifar10" in msg and "name resolution" in msg
    assert "cifar-10-batches-py" in msg and "train/<class>/<image>" in msg and "--data.data_dir" in msg


def test_missing_dir_without_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cifar-100-python"):
        ImageDataModule("cifar100", tmp_path / "none", download=False).prepare_data()
    with pytest.raises(DatasetError, match=r"ImageFolder tree"):
        ImageDataModule("imagefolder", tmp_path / "none").setup("fit")


def test_empty_class_folder_is_named(tiny_folder: Path, tmp_path: Path) -> None:
    root = shutil.copytree(tiny_folder, tmp_path / "copy")
    empty = root / "train" / "class_03"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=f"{empty}.*holds no images"):
        dm(root).setup("fit")


def test_unreadable_image_is_named(tiny_folder: Path, tmp_path: Path) -> None:
    root = shutil.copytree(tiny_folder, tmp_path / "copy")
    bad = root / "train" / "class_02" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DatasetError, match=f"Cannot read image {bad}"):
        dm(root).setup("fit")


def test_class_mismatch_between_train_and_test(tiny_folder: Path, tmp_path: Path) -> None:
    root = shutil.copytree(tiny_folder, tmp_path / "copy")
    (root / "test" / "class_02").rename(root / "test" / "class_09")
    with pytest.raises(DatasetError, match=r"only in train: \['class_02'\]; only in test: \['class_09'\]"):
        dm(root).setup("fit")


def test_wrong_class_count_for_cifar(tiny_folder: Path) -> None:
    with pytest.raises(DatasetError, match="has 3 class folders, but cifar10 has 10"):
        ImageDataModule("cifar10", tiny_folder, val_size=5).setup("fit")


def test_missing_train_split(tmp_path: Path) -> None:
    (tmp_path / "only_test" / "test" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="train/<class>/<image>"):
        dm(tmp_path / "only_test").setup("fit")


@pytest.mark.parametrize("val_size", [60, 0.001, 1000])  # 0.001 x 60 rounds to 0 (0 itself: no validation)
def test_val_size_out_of_range(tiny_folder: Path, val_size: int) -> None:
    with pytest.raises(DatasetError, match=f"val_size={val_size} must leave images.*60 images"):
        dm(tiny_folder, val_size=val_size).setup("fit")


def test_batch_larger_than_train_split(tiny_folder: Path) -> None:
    with pytest.raises(DatasetError, match="batch_size=64 is larger than the 48 training images"):
        dm(tiny_folder, batch_size=64).setup("fit")


def test_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "mixed", 2, n_train=6, n_test=None, size=32)
    odd = root / "train" / "class_01" / "big.png"
    Image.fromarray(np.zeros((48, 40, 3), np.uint8)).save(odd)
    with pytest.raises(DatasetError, match=f"{odd} is 40x48.*--data.image_size"):
        dm(root, val_size=2, batch_size=2).setup("fit")
    d = dm(root, val_size=2, batch_size=2, image_size=24)
    d.setup("fit")
    assert d.split("train").images.shape[1:] == (3, 24, 24)


def test_any_image_mode_becomes_rgb(tmp_path: Path) -> None:
    folder = tmp_path / "modes" / "train" / "a"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).convert("P").save(folder / "pal.png")
    Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)).save(folder / "deep.png")
    split = sources.load_imagefolder_split(folder.parent, tmp_path / "cache")
    assert split.images.shape == (4, 3, 8, 8) and split.images.dtype == torch.uint8
    assert int(split.images[split.paths.index(os.path.join("a", "deep.png"))].max()) > 0


def test_no_test_split_falls_back_to_val(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "no_test", 2, n_train=10, n_test=None)
    d = dm(root, val_size=4, batch_size=4)
    d.setup("test")
    assert not d.has_test_split
    with pytest.warns(UserWarning, match="no test split"):
        n = sum(len(y) for _, y in d.test_dataloader())
    assert n == 4


def test_albumentations_path(tiny_folder: Path) -> None:
    pipeline = [
        {"name": "HorizontalFlip", "p": 1.0},
        {
            "name": "CoarseDropout",
            "num_holes_range": [1, 1],
            "hole_height_range": [8, 8],
            "hole_width_range": [8, 8],
            "p": 1.0,
        },
    ]
    d = dm(tiny_folder, augment="albumentations", albumentations=pipeline, num_workers=0)
    d.setup("fit")
    ds = d.train_dataloader().dataset
    x, _ = ds.__getitems__([0, 1])
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 32, 32)
    raw = d.split("train").images[ds.indices[:2]]
    assert not torch.equal(x, raw)  # augmented
    assert int((x == 0).all(1).flatten(1).sum(1).min()) >= 64  # one 8x8 hole (zeros) per image
    with pytest.raises(ValueError, match="Did you mean: HorizontalFlip"):
        dm(tiny_folder, augment="albumentations", albumentations=[{"name": "HorizontalFlp"}])
    with pytest.raises(ValueError, match="Remove Normalize"):
        dm(tiny_folder, augment="albumentations", albumentations=[{"name": "Normalize"}])


def test_albumentations_in_workers(tiny_folder: Path) -> None:
    d = dm(tiny_folder, augment="albumentations", albumentations=[{"name": "HorizontalFlip"}], num_workers=2)
    d.setup("fit")
    batches = list(d.train_dataloader())
    assert len(batches) == 6 and all(b[0].dtype == torch.uint8 for b in batches)


def test_prediction_inputs_download_without_a_datamodule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``predict.py cifar10:test`` downloads through the sources module; no datamodule is built for it."""
    from lit_vision.data import files
    from lit_vision.data.cifar_classes import CIFAR10_CLASSES

    downloads: list[str] = []

    def fake_download(name: str, data_dir: Path) -> None:
        downloads.append(name)
        make_imagefolder(data_dir, CIFAR10_CLASSES, n_train=1, n_test=1)  # what the data_dir then holds

    def no_datamodule(*args, **kwargs) -> None:
        raise AssertionError("a datamodule was built to download prediction inputs")

    monkeypatch.setattr(files, "download_torchvision_cifar", fake_download)
    monkeypatch.setattr(ImageDataModule, "__init__", no_datamodule)
    items = files.collect_inputs(["cifar10:test"], CIFAR10_CLASSES, tmp_path / "c10")
    assert downloads == ["cifar10"] and len(items) == 10 and all(it.target is not None for it in items)
