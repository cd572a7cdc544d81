"""Data a run cannot use (an empty folder, unreadable images, stray files, labels out of range, no data at
all), beyond the datamodule's own checks in test_datamodule.py: each one answered with a message that says
what is wrong and where, with no traceback (docs/reliability.md lists them all)."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import pytest
from helpers import make_torchvision_cifar10

from lit_vision.cli import run
from lit_vision.data import DatasetError, ImageDataModule


def test_empty_data_dir_lists_layouts(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"(?s)No dataset found.*empty must hold one of") as err:
        ImageDataModule("imagefolder", tmp_path / "empty").setup("fit")
    assert "train/<class>/<image>" in str(err.value) and "--data.data_dir" in str(err.value)


@pytest.mark.parametrize("damage", ["zero_bytes", "truncated"])
def test_zero_byte_and_truncated_images_are_named(tiny_folder: Path, tmp_path: Path, damage: str) -> None:
    root = shutil.copytree(tiny_folder, tmp_path / "copy")
    victim = root / "train" / "class_01" / "0003.png"
    data = victim.read_bytes()
    victim.write_bytes(b"" if damage == "zero_bytes" else data[: len(data) // 2])
    with pytest.raises(DatasetError, match=f"Cannot read image {victim}.*Delete or replace the file"):
        ImageDataModule("imagefolder", root, val_size=12).setup("fit")


def test_non_image_files_are_skipped_with_a_warning(tiny_folder: Path, tmp_path: Path) -> None:
    root = shutil.copytree(tiny_folder, tmp_path / "copy")
    (root / "train" / "class_00" / "labels.csv").write_text("a,b\n")
    (root / "train" / "class_02" / "README").write_text("notes")
    (root / "train" / "class_02" / ".DS_Store").write_bytes(b"\0")  # hidden: skipped silently
    dm = ImageDataModule("imagefolder", root, val_size=12, batch_size=8)
    with pytest.warns(UserWarning, match=r"Skipped 2 non-image file\(s\) in .*train"):
        dm.setup("fit")
    assert len(dm.split("train").images) == 60  # every image still there


def test_labels_out_of_range_in_torchvision_files(tmp_path: Path, monkeypatch) -> None:
    """Files that pass torchvision's checksum (here: patched, as for any generated copy) but carry labels
    the dataset does not have."""
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)
    root = make_torchvision_cifar10(tmp_path / "c10")
    batch_file = root / "cifar-10-batches-py" / "data_batch_2"
    with open(batch_file, "rb") as f:
        batch = pickle.load(f)
    batch["labels"][3] = 12
    with open(batch_file, "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(DatasetError, match=r"1 labels outside 0..9 \(first: image 13 has label 12\)"):
        ImageDataModule("cifar10", root, val_size=10, batch_size=4).setup("fit")


def test_dataset_errors_end_without_a_traceback(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        "sys.argv",
        ["train.py", "fit", f"--data.data_dir={tmp_path / 'nowhere'}", "--data.dataset=imagefolder"],
    )
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: No ImageFolder tree at") and "nowhere" in err and "Traceback" not in err


def test_a_first_run_without_data_shows_only_the_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Lightning resume warnings before the real message (they came from an OnExceptionCheckpoint: with
    one installed, Lightning resumes fit(ckpt_path=None) from "last")."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "sys.argv", ["train.py", "fit", "--data.data_dir=nowhere", "--data.dataset=imagefolder"]
    )
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit):
        warnings.simplefilter("always")
        run()
    resume_talk = [
        str(w.message) for w in caught if "ckpt_path" in str(w.message) or "checkpoint" in str(w.message)
    ]
    assert resume_talk == []
    assert capsys.readouterr().err.startswith("error: No ImageFolder tree at")
