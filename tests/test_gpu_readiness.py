"""What would crash or train wrong on a GPU, checked on the CPU: true half precision end to end,
deterministic kernels, and compiled checkpoints that load like plain ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import folder_run_args
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
