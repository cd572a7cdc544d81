"""Bad inputs not covered in test_datamodule.py / test_cli.py / test_reliability.py: each one answered with
a message that says what is wrong and where (docs/reliability.md lists them all)."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import lightning as L
import pytest
from helpers import QUIET, make_torchvision_cifar10

from lit_vision.cli import main, run
from lit_vision.data import DatasetError, ImageDataModule
from lit_vision.models import ImageClassifier


def folder_args(root: Path) -> list[str]:
    return [
        f"--data.data_dir={root}",
        "--data.dataset=imagefolder",
        "--data.val_size=12",
        "--data.batch_size=8",
    ]


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


def test_unknown_dataset_name(tiny_folder: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["fit", f"--data.data_dir={tiny_folder}", "--data.dataset=cifar11", *QUIET], run=True)
    err = capsys.readouterr().err
    assert "cifar11" in err and "cifar10" in err and "imagefolder" in err


def test_typo_in_config_key(tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  lable_smoothing: 0.1\n")
    with pytest.raises(SystemExit):
        main(["fit", f"--config={config}", *folder_args(tiny_folder), *QUIET])
    assert "lable_smoothing" in capsys.readouterr().err


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


def test_checkpoint_of_another_architecture(
    tiny_folder: Path, tiny_cifar10_folder: Path, tmp_path: Path
) -> None:
    common = [*QUIET, f"--trainer.logger.init_args.save_dir={tmp_path}"]
    fit = main(
        [
            "fit",
            *folder_args(tiny_folder),
            *common,
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
        ]
    )
    ckpt = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"

    # CLI: the checkpoint's model settings are the defaults, so without model options the model is the
    # checkpoint's...
    cli = main(["test", *folder_args(tiny_folder), *common, f"--ckpt_path={ckpt}"])
    assert cli.model.hparams.backbone == "compact_cifar"
    # ...and a --model.backbone the user gives wins, so another architecture is refused with a message
    with pytest.raises(
        ValueError, match=r"trained with backbone='compact_cifar'.*builds backbone='resnet_tiny'"
    ):
        main(
            [
                "test",
                *folder_args(tiny_folder),
                *common,
                "--model.backbone=resnet_tiny",
                f"--ckpt_path={ckpt}",
            ]
        )
    # ...as is a class count from the data: 10 CIFAR-10 classes against a 3-class checkpoint
    with pytest.raises(
        ValueError, match=r"num_classes=3 .*this run builds backbone='compact_cifar', num_classes=10"
    ):
        main(
            ["test", *folder_args(tiny_cifar10_folder), "--data.val_size=20", *common, f"--ckpt_path={ckpt}"]
        )
    # Python API: a model built by hand
    dm = ImageDataModule("imagefolder", tiny_folder, val_size=12, batch_size=8)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(
        ValueError, match=r"trained with backbone='compact_cifar'.*builds backbone='resnet_tiny'"
    ):
        trainer.test(ImageClassifier("resnet_tiny", num_classes=3), datamodule=dm, ckpt_path=ckpt)
