"""What would crash or train wrong on a GPU, checked on the CPU: true half precision end to end,
deterministic kernels, compiled checkpoints that load like plain ones, configs/trainer/gpu.yaml's fused
optimizers, and no CUDA query before the trainer starts (fork-based strategies). Host syncs per step:
test_host_syncs.py; the SyncBatchNorm plugin: test_sync_batchnorm.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import QUIET, ROOT, TinyCli, data_args, run_python
from torch.overrides import TorchFunctionMode

from lit_vision.cli import main
from lit_vision.models import ImageClassifier, create_backbone, list_backbones
from lit_vision.models.inference.classifier_loading import load_classifier, save_classifier
from lit_vision.predict_images import main as predict_main

ZOO = [name for name in list_backbones() if not name.startswith(("torchvision/", "timm/"))]
TRICKS = [f"--config={ROOT / 'configs/tricks' / name}.yaml" for name in ("ema", "mixing", "fgsm", "tta")]


def test_bf16_true_fit_test_and_predict(run_cli: TinyCli, tiny_folder: Path, tmp_path: Path) -> None:
    """bf16-true: Lightning casts the batch before the datamodule turns its uint8 images into normalized
    floats, so those must reach the bf16 weights as bf16 (with every trick on), and predict.py likewise."""
    args = ["--trainer.precision=bf16-true", *TRICKS]
    fit = run_cli("fit", *args, "--trainer.max_epochs=1")
    assert fit.model.backbone.get_classifier().weight.dtype == torch.bfloat16
    assert torch.isfinite(fit.trainer.callback_metrics["val/loss"])
    best = fit.checkpoints / "best.ckpt"
    test = run_cli("test", *args, f"--ckpt_path={best}")
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
#: documented in docs/reliability.md: GapAwareNet's STN (grid_sample), multi-scale pooling and
#: segmentation head (bilinear) have no deterministic CUDA backward; use trainer.deterministic: warn with it
NONDETERMINISTIC_BACKBONES = {"gapawarenet"}


@pytest.mark.parametrize("name", ZOO)
def test_training_forward_uses_deterministic_kernels(name: str) -> None:
    model = create_backbone(name, num_classes=10).train()
    with _Calls() as calls:
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    used = calls.names & NONDETERMINISTIC_ON_CUDA
    if name in NONDETERMINISTIC_BACKBONES:
        assert used, f"{name} is documented as non-deterministic on CUDA: update docs/reliability.md and this"
    else:
        assert not used, f"{name} calls {sorted(used)}: no deterministic CUDA backward"


def test_global_pool_is_the_adaptive_pool() -> None:
    from lit_vision.models.zoo.layers import GlobalAvgPool2d

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


def test_nothing_asks_cuda_before_the_trainer_starts(run_cli: TinyCli) -> None:
    """Fork-based strategies (ddp_fork, ddp_notebook) need a parent process that has not initialized CUDA:
    importing lit_vision and building the CLI's Trainer must not call torch.cuda.is_available() or
    device_count() (Lightning's NVML-based CUDAAccelerator.is_available() is the fork-safe way)."""
    script = f"""
import inspect, sys, torch
calls = []
def spy(name, real):
    def wrapper(*args, **kwargs):
        caller = inspect.stack()[1].filename
        if "lit_vision" in caller:
            calls.append((name, caller))
        return real(*args, **kwargs)
    return wrapper
torch.cuda.is_available = spy("is_available", torch.cuda.is_available)
torch.cuda.device_count = spy("device_count", torch.cuda.device_count)
import pkgutil, importlib, lit_vision
for mod in pkgutil.walk_packages(lit_vision.__path__, "lit_vision."):
    if mod.name != "lit_vision.models.__main__" and not mod.name.endswith("__main__"):
        importlib.import_module(mod.name)
from lit_vision.cli import main
main({run_cli.argv(None)!r}, run=False)
print("CALLS", calls)
sys.exit(1 if calls else 0)
"""
    code, output = run_python("-c", script)
    assert code == 0, output[-5000:]


# one complete config per optimizer class the shipped configs use: the fused flag must reach each of them
FUSED_BASES = {
    "torch.optim.SGD": "configs/cifar10_compact.yaml",
    "torch.optim.AdamW": "configs/finetune_imagefolder.yaml",
    "lit_vision.models.DecoupledSGD": "configs/speedrun/cifar10_94.yaml",
}


def test_every_shipped_optimizer_has_a_gpu_fragment_test() -> None:
    import yaml

    used = set()
    for path in (ROOT / "configs").rglob("*.yaml"):
        optimizer = ((yaml.safe_load(path.read_text()) or {}).get("model") or {}).get("optimizer") or {}
        used.add(optimizer.get("class_path", "torch.optim.AdamW"))  # ImageClassifier's default
    assert used == set(FUSED_BASES)


@pytest.mark.parametrize("optimizer", sorted(FUSED_BASES))
def test_gpu_fragment_composes_and_steps_a_fused_optimizer(
    optimizer: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """configs/trainer/gpu.yaml after a complete config: bf16-mixed, cuDNN autotuning, the large eval batch
    and a fused optimizer that takes a step (fused SGD/AdamW run on CPU too, so this runs here)."""
    config = FUSED_BASES[optimizer]
    cli = main(
        [
            "fit",
            f"--config={ROOT / config}",
            f"--config={ROOT / 'configs/trainer/gpu.yaml'}",
            "--trainer.accelerator=cpu",  # the one thing a CPU test must change
            *data_args(config, request),
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *QUIET,
        ]
    )
    assert cli.config.fit.model.optimizer.class_path == optimizer
    assert cli.trainer.precision == "bf16-mixed" and torch.backends.cudnn.benchmark
    assert cli.datamodule.eval_batch_size == 1024
    opt = cli.trainer.optimizers[0]
    assert all(group["fused"] for group in opt.param_groups)
    assert cli.trainer.global_step == 1 and opt.state  # the fused kernel stepped
