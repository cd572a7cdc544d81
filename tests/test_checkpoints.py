"""Safe checkpoint loading: a crafted pickle runs no code unless the user opts in; broken files and the
checkpoints of another model get a message.

Every app that reads a checkpoint the user hands it (predict.py, report, explain, export) loads with
``torch.load(weights_only=True)`` through ``lit_vision.models.inference.classifier_loading``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import TinyCli, TinyNet

from lit_vision import cli, explain, export, predict_images, report
from lit_vision.data import ImageDataModule
from lit_vision.models import ImageClassifier
from lit_vision.models.inference.classifier_loading import (
    CheckpointError,
    UntrustedCheckpointError,
    load_classifier,
    read_checkpoint,
    save_classifier,
)


class CreatesAFile:
    """Unpickling this calls ``open(path, "w")``: the file appears only if the pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "crafted.ckpt"
    torch.save(
        {"state_dict": {}, "hyper_parameters": {"backbone": "compact_cifar"}, "x": CreatesAFile(marker)}, path
    )
    return path, marker


APPS: dict[str, Callable[[list[str]], object]] = {
    "predict": lambda args: predict_images.main(["nothing.png", "--out", "p.csv", *args]),
    "report": lambda args: report.main(["nothing/", *args]),
    "explain": lambda args: explain.main(["nothing.png", *args]),
    "export": lambda args: export.main(["--format", "torchscript", *args]),
}


@pytest.mark.parametrize("app", sorted(APPS))
def test_a_crafted_checkpoint_runs_no_code(
    app: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path, marker = crafted(tmp_path)
    with pytest.raises(SystemExit) as stop:
        APPS[app](["--ckpt", str(path)])
    assert stop.value.code == 1 and not marker.exists()
    err = capsys.readouterr().err
    # the reason names what the file would have called (``open`` pickles as ``io.open``)
    assert err.startswith("error: ") and re.search(r"pickled Python objects \(\w+\.open\)", err)
    assert "--trust-checkpoint" in err


def test_the_opt_in_loads_what_the_user_trusts(tmp_path: Path) -> None:
    path, marker = crafted(tmp_path)
    with pytest.raises(UntrustedCheckpointError):
        read_checkpoint(path)
    assert not marker.exists()
    read_checkpoint(path, trusted=True)
    assert marker.exists()  # full unpickling ran the file's code: that is what the opt-in allows


def test_our_checkpoints_load_without_the_opt_in(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ImageClassifier(backbone="compact_cifar", num_classes=3, class_names=["a", "b", "c"])
    path = save_classifier(model, tmp_path / "m.ckpt")
    loaded = load_classifier(path)
    assert loaded.class_names == ["a", "b", "c"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "a tensor"])
def test_broken_files_get_a_message(tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    good = save_classifier(ImageClassifier(num_classes=3), tmp_path / "good.ckpt")
    path = tmp_path / "bad.ckpt"
    if damage == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("not a checkpoint\n")
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match=r"bad\.ckpt"):
        load_classifier(path)
    with pytest.raises(SystemExit) as stop:
        predict_images.main(["nothing.png", "--ckpt", str(path), "--out", str(tmp_path / "p.csv")])
    assert stop.value.code == 1 and capsys.readouterr().err.startswith("error: ")


# ------------------------------------------------------------------ train.py --ckpt_path


@pytest.mark.parametrize("damage", ["truncated", "crafted", "missing", "weights only"])
def test_train_refuses_a_bad_ckpt_path_with_one_message(
    damage: str,
    run_cli: TinyCli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, marker = crafted(tmp_path)
    if damage == "truncated":
        good = save_classifier(ImageClassifier(num_classes=3), tmp_path / "good.ckpt")
        path.write_bytes(good.read_bytes()[:1000])
    elif damage == "missing":
        path = tmp_path / "nowhere.ckpt"
    elif damage == "weights only":  # a plain state_dict: weights, not a run to resume
        torch.save(ImageClassifier(num_classes=3).state_dict(), path)
    expected = {
        "truncated": "is not a readable checkpoint",
        "crafted": "pickled Python objects",
        "missing": "does not exist",
        "weights only": "not a Lightning checkpoint (no state_dict)",
    }[damage]
    monkeypatch.setattr("sys.argv", ["train.py", *run_cli.argv("fit", f"--ckpt_path={path}")])
    with pytest.raises(SystemExit) as stop:
        cli.run()
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err and not marker.exists()
    if damage == "crafted":
        assert "--weights_only false" in err  # train.py's opt-in is Lightning's own flag


def test_checkpoint_of_another_architecture(
    run_cli: TinyCli, tiny_checkpoint: Path, tiny_folder: Path, tiny_cifar10_folder: Path
) -> None:
    """A checkpoint of compact_cifar on 3 classes, tested by a run that builds another model: refused with
    both models named, through the CLI and through the Python API."""
    ckpt = tiny_checkpoint
    # CLI: the checkpoint's model settings are the defaults, so without model options the model is the
    # checkpoint's...
    tested = run_cli("test", f"--ckpt_path={ckpt}")
    assert tested.model.hparams.backbone == "compact_cifar"
    # ...and a --model.backbone the user gives wins, so another architecture is refused with a message
    with pytest.raises(
        ValueError, match=r"trained with backbone='compact_cifar'.*builds backbone='resnet_tiny'"
    ):
        run_cli("test", "--model.backbone=resnet_tiny", f"--ckpt_path={ckpt}")
    # ...as is a class count from the data: 10 CIFAR-10 classes against a 3-class checkpoint
    with pytest.raises(
        ValueError, match=r"num_classes=3 .*this run builds backbone='compact_cifar', num_classes=10"
    ):
        run_cli("test", "--data.val_size=20", f"--ckpt_path={ckpt}", data=tiny_cifar10_folder)
    # Python API: a model built by hand
    dm = ImageDataModule("imagefolder", tiny_folder, val_size=12, batch_size=8)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(
        ValueError, match=r"trained with backbone='compact_cifar'.*builds backbone='resnet_tiny'"
    ):
        trainer.test(ImageClassifier("resnet_tiny", num_classes=3), datamodule=dm, ckpt_path=ckpt)


# ------------------------------------------------------------------ backbones given by class_path


def test_a_class_path_backbone_is_rebuilt_by_the_apps(
    run_cli: TinyCli, tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {"class_path": "helpers.TinyNet", "init_args": {"num_classes": 3, "hidden": 4}}
    fit = run_cli("fit", f"--model.backbone={json.dumps(spec)}", "--trainer.max_epochs=1")
    best = fit.checkpoints / "best.ckpt"
    assert read_checkpoint(best)["hyper_parameters"]["backbone"] == spec  # plain data: loads weights-only

    model = load_classifier(best)
    assert isinstance(model.backbone, TinyNet) and model.backbone.conv.out_channels == 4
    trained = fit.model.state_dict()  # what training left (no EMA here)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, trained[key])
    resaved = load_classifier(save_classifier(model, tmp_path / "again.ckpt"))  # the spec survives a re-save
    assert isinstance(resaved.backbone, TinyNet)

    monkeypatch.chdir(tmp_path)
    image = tiny_folder / "test" / "class_00"
    predict_images.main([str(image), "--ckpt", str(best), "--out", "p.csv"])
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 1 + len(list(image.iterdir()))
    export.main(["--ckpt", str(best), "--format", "torchscript", "--out", "m.pt"])
    assert (tmp_path / "m.pt").stat().st_size > 0


def test_a_module_object_backbone_gets_a_way_out(tmp_path: Path) -> None:
    path = save_classifier(
        ImageClassifier(backbone=TinyNet(num_classes=3), num_classes=3), tmp_path / "m.ckpt"
    )
    with pytest.raises(CheckpointError, match=r"passed as a module object.*load_state_dict"):
        load_classifier(path)


def test_a_class_that_is_not_a_module_is_refused(tmp_path: Path) -> None:
    model = ImageClassifier(num_classes=3)
    path = save_classifier(model, tmp_path / "m.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["backbone"] = {"class_path": "collections.Counter", "init_args": {}}
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="Cannot rebuild the model"):
        load_classifier(path)
