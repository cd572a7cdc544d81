"""What would crash or train wrong on a GPU, checked on the CPU: true half precision end to end,
deterministic kernels, and compiled checkpoints that load like plain ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import HostSyncRecorder, folder_run_args
from torch.overrides import TorchFunctionMode

from lit_vision.cli import main
from lit_vision.models import ImageClassifier, create_backbone, list_backbones
from lit_vision.models.checkpoints import load_classifier, save_classifier
from lit_vision.predict import main as predict_main

ROOT = Path(__file__).resolve().parents[1]
ZOO = [name for name in list_backbones() if not name.startswith(("torchvision/", "timm/"))]
TRICKS = [f"--config={ROOT / 'configs/tricks' / name}.yaml" for name in ("ema", "mixing", "fgsm", "tta")]


def test_bf16_true_fit_test_and_predict(tiny_folder: Path, tmp_path: Path) -> None:
    """bf16-true: Lightning casts the batch before the datamodule turns its uint8 images into normalized
    floats, so those must reach the bf16 weights as bf16 (with every trick on), and predict.py likewise."""
    args = [*folder_run_args(tiny_folder, tmp_path / "runs"), "--trainer.precision=bf16-true", *TRICKS]
    fit = main(["fit", *args, "--trainer.max_epochs=1"])
    assert fit.model.backbone.get_classifier().weight.dtype == torch.bfloat16
    assert torch.isfinite(fit.trainer.callback_metrics["val/loss"])
    best = Path(fit.trainer.log_dir) / "checkpoints" / "best.ckpt"
    test = main(["test", *args, f"--ckpt_path={best}"])
    assert 0.0 <= float(test.trainer.callback_metrics["test/acc"]) <= 1.0
    out = tmp_path / "p.csv"
    summary = predict_main(
        ["--ckpt", str(best), str(tiny_folder / "test"), "--precision=bf16-true", "--out", str(out)]
    )
    assert summary["images"] == 18 and summary["failed"] == 0


class _Calls(TorchFunctionMode):
    """Records the torch functions called inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


#: functions whose CUDA backward has no deterministic kernel (torch.use_deterministic_algorithms raises in
#: the first backward): global pooling must be a mean instead
NONDETERMINISTIC_ON_CUDA = {
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "interpolate",
    "upsample_bilinear",
    "grid_sample",
}
#: documented in the README: GapAwareNet's STN (grid_sample), multi-scale pooling and segmentation head
#: (bilinear) have no deterministic CUDA backward; use trainer.deterministic: warn with it
NONDETERMINISTIC_BACKBONES = {"gapawarenet"}


@pytest.mark.parametrize("name", ZOO)
def test_training_forward_uses_deterministic_kernels(name: str) -> None:
    model = create_backbone(name, num_classes=10).train()
    with _Calls() as calls:
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    used = calls.names & NONDETERMINISTIC_ON_CUDA
    if name in NONDETERMINISTIC_BACKBONES:
        assert used, f"{name} is documented as non-deterministic on CUDA: update the README and this list"
    else:
        assert not used, f"{name} calls {sorted(used)}: no deterministic CUDA backward"


def test_global_pool_is_the_adaptive_pool() -> None:
    from lit_vision.models.layers import GlobalAvgPool2d

    x = torch.randn(3, 5, 7, 6)
    torch.testing.assert_close(GlobalAvgPool2d()(x), F.adaptive_avg_pool2d(x, 1))


def test_compiled_and_plain_checkpoints_load_into_each_other(tmp_path: Path) -> None:
    """compile: true compiles the backbone in place, so the checkpoint keys are the plain model's."""
    torch.manual_seed(0)
    plain = ImageClassifier("compact_cifar", num_classes=3)
    compiled = ImageClassifier("compact_cifar", num_classes=3, compile=True)
    compiled.configure_model()
    compiled.configure_model()  # a second stage (test after fit) compiles nothing twice
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in key for key in compiled.state_dict())

    save_classifier(compiled, tmp_path / "compiled.ckpt")
    into_plain = load_classifier(tmp_path / "compiled.ckpt")
    for key, value in compiled.state_dict().items():
        torch.testing.assert_close(into_plain.state_dict()[key], value, rtol=0, atol=0)

    save_classifier(plain, tmp_path / "plain.ckpt")
    target = ImageClassifier("compact_cifar", num_classes=3, compile=True)
    target.configure_model()
    target.load_state_dict(torch.load(tmp_path / "plain.ckpt", weights_only=True)["state_dict"])  # strict
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- host syncs
SPEEDRUN = [
    f"--config={ROOT / 'configs/speedrun/cifar10_94.yaml'}",
    "--ema.init_args.step_updates_from_epoch=0",  # the Lookahead EMA updates inside the watched steps
    "--model.backbone_kwargs={widths: [8, 16, 16]}",
]


@pytest.mark.parametrize(
    ("configs", "flags"),
    [
        pytest.param([], ["--trainer.enable_progress_bar=true"], id="default-with-progress-bar"),
        pytest.param(SPEEDRUN[:1], SPEEDRUN[1:], id="speedrun"),
        pytest.param(TRICKS, [], id="every-trick"),
        pytest.param([], ["--data.device_resident=true", "--model.nonfinite_loss=ignore"], id="resident"),
    ],
)
def test_training_steps_read_nothing_back_from_the_device(
    tiny_folder: Path, tmp_path: Path, configs: list[str], flags: list[str]
) -> None:
    """Zero host syncs per training step: from one step's start to the next, nothing in the loader, the
    transfer hooks, training_step, the callbacks or Lightning's logging reads a device value on the host
    (see helpers.HostSyncRecorder for what counts, and benchmarks/gpu_check.py for the count on a GPU)."""
    args = [*configs, *folder_run_args(tiny_folder, tmp_path / "runs"), *flags]
    # batch 2: the watched steps lie inside the first epoch (epoch ends may read the device)
    cli = main([*args, "--trainer.max_steps=9", "--data.batch_size=2"], run=False)
    recorder = HostSyncRecorder(start=2, steps=5)
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 9
    assert recorder.records == [], "\n".join(recorder.records)


def test_the_recorder_sees_a_host_read(tiny_folder: Path, tmp_path: Path) -> None:
    """The check above can fail: a per-step .item() (nonfinite_loss: skip reads the loss every step) and
    torchmetrics' NaN checks are caught."""
    args = [*folder_run_args(tiny_folder, tmp_path / "runs"), "--model.nonfinite_loss=skip"]
    cli = main([*args, "--trainer.max_steps=6"], run=False)
    recorder = HostSyncRecorder(start=2, steps=3)
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert sum("_loss_is_finite" in r for r in recorder.records) == 3  # once per watched step


def test_device_resident_data_trains_and_evaluates_the_same(tiny_folder: Path, tmp_path: Path) -> None:
    """data.device_resident (indices from the loader, gathered on the device) changes where images live,
    not what is trained on: same weights after fit (alternating flip included), same test and predict."""
    weights, tested, predicted = [], [], []
    for resident in (False, True):
        args = [
            *folder_run_args(tiny_folder, tmp_path / f"runs{resident}"),
            f"--data.device_resident={str(resident).lower()}",
            "--data.alternating_flip=true",
            "--trainer.max_epochs=2",
        ]
        cli = main(args, run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        weights.append({k: v.clone() for k, v in cli.model.state_dict().items()})
        tested.append(cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0])
        predicted.append(torch.cat(cli.trainer.predict(cli.model, datamodule=cli.datamodule)))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert tested[0] == tested[1]
    assert torch.equal(predicted[0], predicted[1])
