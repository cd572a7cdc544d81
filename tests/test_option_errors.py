"""Refused option values (issue 34): each ends `train.py fit` with one `error:` line naming the option as the
user writes it, exit code 1 (2 where jsonargparse itself rejects the value), no traceback, and before any
work starts (the classes refuse in `__init__`, when the CLI instantiates them, before data is loaded).

A few cases run `train.py` as a real subprocess (what a user sees, ~5 s each); the rest run the same entry
point, `lit_vision.cli.run()`, in-process. Unit tests below pin each class's checks and the values still
accepted at the edges.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import TinyCli, run_python
from lightning.pytorch.accelerators import CUDAAccelerator

from lit_vision.callbacks import EMA, FGSM, MixUpCutMix, PredictionWriter
from lit_vision.callbacks import TestTimeAugmentation as TTACallback  # not collected as a test class
from lit_vision.callbacks.wandb_media import WandbMediaLogger
from lit_vision.cli import run
from lit_vision.data import ImageDataModule
from lit_vision.errors import ConfigError
from lit_vision.models import create_backbone
from lit_vision.models.inference.test_time_views import TestTimeViews as TTAViews
from lit_vision.models.training.losses import SoftTargetCrossEntropy

#: a run that got past the checks trains one step (today's behaviour for some values: the test then fails)
ONE_STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1"]


def check_refusal(code: int, expected: int, output: str, words: list[str]) -> None:
    """Exit code ``expected``, no traceback, exactly one ``error:`` line, holding every word of ``words``."""
    assert "Traceback" not in output, output
    assert code == expected, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    missing = [word for word in words if word not in errors[0]]
    assert not missing, f"{missing} not in {errors[0]!r}"


# (flags, exit code, words of the error line)
SUBPROCESS_CASES = [
    pytest.param(["--data.batch_size=0"], 1, ["--data.batch_size", ">= 1", "got 0"], id="batch_size-0"),
    pytest.param(
        ["--data.val_size=2.0"], 1, ["--data.val_size", "--data.val_size 2", "0.1"], id="val_size-float-count"
    ),
    pytest.param(["--data.batch_size=abc"], 2, ["data.batch_size"], id="batch_size-not-an-int"),
]

IN_PROCESS_CASES = [
    pytest.param(["--data.val_size=-5"], 1, ["--data.val_size", ">= 0", "-5"], id="val_size-negative"),
    pytest.param(["--data.eval_batch_size=0"], 1, ["--data.eval_batch_size", ">= 1"], id="eval_batch_size-0"),
    pytest.param(["--data.crop_padding=-3"], 1, ["--data.crop_padding", ">= 0", "-3"], id="crop_padding-neg"),
    pytest.param(["--data.cutout=-8"], 1, ["--data.cutout", ">= 0", "-8"], id="cutout-negative"),
    pytest.param(
        ["--data.random_erasing=1.5"], 1, ["--data.random_erasing", "[0, 1]"], id="random_erasing-1.5"
    ),
    pytest.param(
        ["--data.policy=randaugment", "--data.magnitude=31"],
        1,
        ["--data.magnitude", "0..30"],
        id="magnitude-31",
    ),
    pytest.param(["--data.num_workers=-1"], 1, ["--data.num_workers", ">= 0"], id="num_workers-negative"),
    pytest.param(
        ["--model.backbone=resnet_nope"], 1, ["--model.backbone", "resnet_nope", "resnet_tiny"], id="backbone"
    ),
    pytest.param(
        ["--model.label_smoothing=1.5"], 1, ["--model.label_smoothing", "[0, 1)"], id="label_smoothing-1.5"
    ),
    # The trick keys are Optional[<callback>]: jsonargparse re-raises a refusal from the callback's __init__
    # as a plain ValueError ("Does not validate against any of the Union subtypes") caused by the ConfigError.
    pytest.param(
        ["--ema=lit_vision.callbacks.EMA", "--ema.init_args.decay=1.5"],
        1,
        ["--ema.init_args.decay", "(0, 1)", "1.5"],
        id="ema-decay-1.5",
    ),
    pytest.param(
        ["--mixing=lit_vision.callbacks.MixUpCutMix", "--mixing.init_args.prob=1.5"],
        1,
        ["--mixing.init_args.prob", "[0, 1]", "1.5"],
        id="mixing-prob-1.5",
    ),
    pytest.param(
        ["--fgsm=lit_vision.callbacks.FGSM", "--fgsm.init_args.eps=8"],
        1,
        ["--fgsm.init_args.eps", "[0, 1]", "8/255"],
        id="fgsm-eps-in-pixels",
    ),
    pytest.param(
        ["--tta=lit_vision.callbacks.TestTimeAugmentation", "--tta.init_args.translate_weight=1.0"],
        1,
        ["--tta.init_args.translate_weight", "[0, 1)"],
        id="tta-translate_weight-1",
    ),
    pytest.param(
        ["--prediction_writer.topk=-1"], 1, ["--prediction_writer.topk", ">= 0"], id="topk-negative"
    ),
    pytest.param(["--data.dataset=cifar11"], 2, ["data.dataset"], id="dataset-unknown"),
    pytest.param(
        ["--model.optimizer=torch.optim.SGD", "--model.optimizer.init_args.lr=0"],
        1,
        ["--model.optimizer.init_args.lr", "> 0"],
        id="lr-0",
    ),
    pytest.param(
        ["--model.optimizer.init_args.lr=-0.001"], 1, ["--model.optimizer.init_args.lr", "> 0"], id="lr-neg"
    ),
    pytest.param(
        ["--model.backbone_kwargs={widht: 2}"], 1, ["--model.backbone_kwargs", "widht"], id="backbone_kwargs"
    ),
    pytest.param(
        ["--model.nonfinite_check_every_n_steps=0"],
        1,
        ["--model.nonfinite_check_every_n_steps", ">= 1"],
        id="nonfinite_check-0",
    ),
    pytest.param(
        ["--trainer.max_epochs=0"], 1, ["--trainer.max_epochs 0", "train nothing"], id="max_epochs-0"
    ),
    pytest.param(["--trainer.max_steps=0"], 1, ["--trainer.max_steps 0", "train nothing"], id="max_steps-0"),
    pytest.param(
        ["--trainer.num_nodes=2"], 1, ["--trainer.num_nodes 2", "torchrun"], id="num_nodes-no-launcher"
    ),
    pytest.param(
        ["--trainer.accelerator=gpu"],
        1,
        ["--trainer.accelerator gpu", "auto"],
        id="no-gpu-here",
        marks=pytest.mark.skipif(CUDAAccelerator.is_available(), reason="this machine has a GPU"),
    ),
]


@pytest.mark.parametrize(("flags", "code", "words"), SUBPROCESS_CASES)
def test_refused_by_train_py(flags: list[str], code: int, words: list[str], run_cli: TinyCli) -> None:
    returncode, output = run_python("train.py", *run_cli.argv("fit", *ONE_STEP, *flags), timeout=120)
    check_refusal(returncode, code, output, words)
    assert not run_cli.runs.exists()  # refused before anything started: no run directory


@pytest.mark.parametrize(("flags", "code", "words"), IN_PROCESS_CASES)
def test_refused_by_the_cli(
    flags: list[str],
    code: int,
    words: list[str],
    run_cli: TinyCli,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", *run_cli.argv("fit", *ONE_STEP, *flags)])
    with pytest.raises(SystemExit) as exit_info:
        run()
    captured = capsys.readouterr()
    check_refusal(exit_info.value.code, code, captured.out + captured.err, words)
    assert not run_cli.runs.exists()


# ------------------------------------------------- refused by jsonargparse while parsing, in its own words
def test_unknown_dataset_name(run_cli: TinyCli, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_cli("fit", "--data.dataset=cifar11")
    err = capsys.readouterr().err
    assert "cifar11" in err and "cifar10" in err and "imagefolder" in err  # the value and the known ones


def test_typo_in_config_key(run_cli: TinyCli, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  lable_smoothing: 0.1\n")
    with pytest.raises(SystemExit):
        run_cli("fit", configs=[config])
    assert "lable_smoothing" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- unit tests
def datamodule(**kwargs: Any) -> ImageDataModule:
    return ImageDataModule("imagefolder", "nowhere", **kwargs)


# (constructor, keyword arguments, words of the message)
REFUSED: list[tuple[Callable[..., object], dict[str, Any], list[str]]] = [
    (datamodule, {"val_size": 2.0}, ["--data.val_size", "--data.val_size 2", "--data.val_size 0.1"]),
    (datamodule, {"val_size": 1.0}, ["--data.val_size", "--data.val_size 1"]),
    (datamodule, {"val_size": 2.5}, ["--data.val_size", "an int", "0.1"]),
    (datamodule, {"val_size": -1}, ["--data.val_size", ">= 0"]),
    (datamodule, {"val_size": -0.1}, ["--data.val_size", ">= 0"]),
    (datamodule, {"batch_size": 0}, ["--data.batch_size", ">= 1"]),
    (datamodule, {"eval_batch_size": 0}, ["--data.eval_batch_size", ">= 1"]),
    (datamodule, {"crop_padding": -3}, ["--data.crop_padding", ">= 0"]),
    (datamodule, {"cutout": -1}, ["--data.cutout", ">= 0"]),
    (datamodule, {"num_ops": 0}, ["--data.num_ops", ">= 1"]),
    (datamodule, {"magnitude": -1}, ["--data.magnitude", "0..30"]),
    (datamodule, {"magnitude": 31}, ["--data.magnitude", "0..30"]),
    (datamodule, {"color_jitter": -0.1}, ["--data.color_jitter", ">= 0"]),
    (datamodule, {"random_erasing": 1.5}, ["--data.random_erasing", "[0, 1]"]),
    (datamodule, {"random_erasing": float("nan")}, ["--data.random_erasing", "[0, 1]"]),
    (datamodule, {"image_size": 0}, ["--data.image_size", ">= 1"]),
    (datamodule, {"num_workers": -1}, ["--data.num_workers", ">= 0"]),
    (datamodule, {"backend": "disk"}, ["--data.backend", "memory", "streaming"]),
    (datamodule, {"augment": "kornia"}, ["--data.augment", "batched"]),
    (datamodule, {"policy": "autoaugment"}, ["--data.policy", "randaugment"]),
    (datamodule, {"predict_split": "all"}, ["--data.predict_split", "test"]),
    (datamodule, {"augment": "albumentations"}, ["--data.albumentations"]),
    (datamodule, {"augment": "torchvision"}, ["--data.torchvision"]),
    (datamodule, {"device_resident": True, "backend": "streaming"}, ["--data.device_resident", "memory"]),
    (ImageDataModule, {"dataset": "cifar11"}, ["--data.dataset", "cifar11", "imagefolder"]),
    (
        datamodule,
        {"augment": "albumentations", "albumentations": [{"name": "HorizontalFlip", "p": 2}]},
        ["--data.albumentations", "HorizontalFlip", "less than or equal to 1"],
    ),
    (
        datamodule,
        {"augment": "torchvision", "torchvision": [{"name": "RandomHorizontalFlp"}]},
        ["--data.torchvision", "Did you mean: RandomHorizontalFlip"],
    ),
    (EMA, {"decay": 0.0}, ["--ema.init_args.decay", "(0, 1)"]),
    (EMA, {"decay": 1.0}, ["--ema.init_args.decay", "(0, 1)"]),
    (EMA, {"update_every_n_steps": 0}, ["--ema.init_args.update_every_n_steps", ">= 1"]),
    (EMA, {"update_starting_at_step": -1}, ["--ema.init_args.update_starting_at_step", ">= 0"]),
    (EMA, {"update_starting_at_epoch": -1}, ["--ema.init_args.update_starting_at_epoch", ">= 0"]),
    (EMA, {"step_updates_from_epoch": -1}, ["--ema.init_args.step_updates_from_epoch", ">= 0"]),
    (EMA, {"warmup_power": 0.0}, ["--ema.init_args.warmup_power", "> 0"]),
    (EMA, {"warmup": "linear"}, ["--ema.init_args.warmup", "progress"]),
    (MixUpCutMix, {"mixup_alpha": -1.0}, ["--mixing.init_args.mixup_alpha", ">= 0"]),
    (MixUpCutMix, {"mixup_alpha": 0.0, "cutmix_alpha": 0.0}, ["--mixing.init_args.cutmix_alpha", "> 0"]),
    (MixUpCutMix, {"switch_prob": -0.1}, ["--mixing.init_args.switch_prob", "[0, 1]"]),
    (MixUpCutMix, {"mode": "pair"}, ["--mixing.init_args.mode", "elem"]),
    (MixUpCutMix, {"stop_epoch": -1}, ["--mixing.init_args.stop_epoch", ">= 0"]),
    (FGSM, {"eps": -0.1}, ["--fgsm.init_args.eps", "[0, 1]"]),
    (FGSM, {"test_eps": 8.0}, ["--fgsm.init_args.test_eps", "[0, 1]", "8/255"]),
    (FGSM, {"adv_every": 0}, ["--fgsm.init_args.adv_every", ">= 1"]),
    (FGSM, {"mode": "both"}, ["--fgsm.init_args.mode", "append"]),
    (TTACallback, {"translate": -1}, ["--tta.init_args.translate", ">= 0"]),
    (TTACallback, {"max_batch": 0}, ["--tta.init_args.max_batch", ">= 1"]),
    (TTACallback, {"translate_weight": -0.5}, ["--tta.init_args.translate_weight", "[0, 1)"]),
    (TTACallback, {"average": "max"}, ["--tta.init_args.average", "logits"]),
    (TTAViews, {"translate_weight": 1.0}, ["translate_weight", "[0, 1)"]),
    (PredictionWriter, {"topk": -1}, ["--prediction_writer.topk", "--topk", ">= 0"]),
    (PredictionWriter, {"file_format": "xml"}, ["--prediction_writer.file_format", "jsonl"]),
    (WandbMediaLogger, {"num_samples": -1}, ["--wandb_media.init_args.num_samples", ">= 0"]),
    (WandbMediaLogger, {"gradcam": -1}, ["--wandb_media.init_args.gradcam", ">= 0"]),
    (WandbMediaLogger, {"gradcam_method": "nope"}, ["--wandb_media.init_args.gradcam_method", "gradcam"]),
    (WandbMediaLogger, {"watch": "grads"}, ["--wandb_media.init_args.watch", "gradients"]),
    (WandbMediaLogger, {"watch_log_freq": 0}, ["--wandb_media.init_args.watch_log_freq", ">= 1"]),
    (
        create_backbone,
        {"name": "resnet_nope", "num_classes": 3},
        ["--model.backbone", "resnet_nope", "resnet_tiny"],
    ),
    (SoftTargetCrossEntropy, {"label_smoothing": 1.0}, ["--model.label_smoothing", "[0, 1)"]),
]


def case_id(make: Callable[..., object], kwargs: dict[str, Any]) -> str:
    return "-".join([make.__name__, *(f"{key}={value}" for key, value in kwargs.items())])[:80]


@pytest.mark.parametrize(("make", "kwargs", "words"), REFUSED, ids=[case_id(m, kw) for m, kw, _ in REFUSED])
def test_refused_at_construction(
    make: Callable[..., object], kwargs: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        make(**kwargs)
    message = str(err.value)
    assert "\n" not in message  # one `error:` line
    missing = [word for word in words if word not in message]
    assert not missing, f"{missing} not in {message!r}"
    assert isinstance(err.value, ValueError)  # callers catching ValueError keep working


ACCEPTED: list[tuple[Callable[..., object], dict[str, Any]]] = [
    (datamodule, {"val_size": 0}),
    (datamodule, {"val_size": 0.0}),
    (datamodule, {"val_size": 0.1}),
    (datamodule, {"val_size": 5000}),
    (
        datamodule,
        {"crop_padding": 0, "cutout": 0, "magnitude": 0, "random_erasing": 1.0, "color_jitter": 2.0},
    ),
    (datamodule, {"magnitude": 30, "num_workers": 0, "image_size": 1, "eval_batch_size": 1, "batch_size": 1}),
    (
        EMA,
        {"decay": 0.7738, "warmup": "progress", "update_starting_at_step": 0, "step_updates_from_epoch": 0},
    ),
    (MixUpCutMix, {"mixup_alpha": 0.0, "prob": 0.0, "switch_prob": 1.0, "stop_epoch": 0}),
    (FGSM, {"eps": 0.0, "test_eps": 1.0}),
    (TTACallback, {"translate": 0, "translate_weight": 0.0, "max_batch": 1}),
    (PredictionWriter, {"topk": 0}),
    (WandbMediaLogger, {"num_samples": 0, "gradcam": 0, "watch": "all", "watch_log_freq": 1}),
    (SoftTargetCrossEntropy, {"label_smoothing": 0.0}),
]


@pytest.mark.parametrize(("make", "kwargs"), ACCEPTED, ids=[case_id(m, kw) for m, kw in ACCEPTED])
def test_edge_values_are_accepted(make: Callable[..., object], kwargs: dict[str, Any]) -> None:
    make(**kwargs)
