"""What would crash or train wrong on a GPU, checked on the CPU: true half precision end to end,
deterministic kernels, and compiled checkpoints that load like plain ones."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import QUIET, ROOT, HostSyncRecorder, data_args, folder_run_args
from torch.overrides import TorchFunctionMode

from lit_vision.cli import main
from lit_vision.models import ImageClassifier, create_backbone, list_backbones
from lit_vision.models.inference.classifier_loading import load_classifier, save_classifier
from lit_vision.predict_images import main as predict_main

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
    assert sum("loss_is_finite" in r for r in recorder.records) == 3  # once per watched step


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


# ---------------------------------------------------------------------- sync_batchnorm (issue: GPU readiness)
def test_sync_batchnorm_plugin_keeps_timm_norm_act_and_reverts_to_the_built_model() -> None:
    """Lightning's conversion turns timm's BatchNorm+activation layers into plain SyncBatchNorm (no
    activation); the plugin keeps the activation, and revert puts back the very layers it replaced, holding
    the trained tensors. (Without a process group SyncBatchNorm computes plain BatchNorm: same outputs.)"""
    pytest.importorskip("timm")
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from lit_vision.plugins import SyncBatchNorm

    model = ImageClassifier("timm/mobilenetv3_small_050", num_classes=4)
    model.configure_model()
    x = torch.randn(4, 3, 32, 32)
    originals = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    norm_act = [n for n, m in originals.items() if type(m).__name__ == "BatchNormAct2d"]
    assert norm_act, "the test needs a timm model with BatchNormAct2d layers"
    model.eval()
    expected = model(x)

    # what the plugin exists for: Lightning's conversion keeps the activation as an unused child
    lightning = TorchSyncBatchNorm().apply(copy.deepcopy(model))
    assert type(lightning.get_submodule(norm_act[0])) is torch.nn.SyncBatchNorm
    assert not torch.allclose(lightning(x), expected, atol=1e-3)

    plugin = SyncBatchNorm()
    synced = plugin.apply(model)
    assert all(isinstance(synced.get_submodule(n), torch.nn.SyncBatchNorm) for n in originals)
    assert all(type(synced.get_submodule(n)).__name__ == "SyncBatchNormAct" for n in norm_act)
    synced.on_fit_start()  # the model's own check accepts the plugin's conversion
    torch.testing.assert_close(synced(x), expected)

    synced.train()
    synced(x)  # a training step moves the running statistics
    trained = {k: v.clone() for k, v in synced.state_dict().items()}
    reverted = plugin.revert(synced)
    assert all(reverted.get_submodule(n) is m for n, m in originals.items())
    for key, value in reverted.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0)
    assert reverted.training


def test_sync_batchnorm_refusals() -> None:
    """What would train wrong or slowly is refused, naming the layer: a BatchNorm subclass whose forward
    nobody can keep; a timm norm-act layer already flattened by Lightning's conversion; compile."""
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from lit_vision.plugins import SyncBatchNorm

    class ScaledBN(torch.nn.BatchNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), ScaledBN(4))
    with pytest.raises(ValueError, match=r"layer '1' is a .*ScaledBN, a BatchNorm subclass with its own"):
        SyncBatchNorm().apply(net)

    compiled = ImageClassifier("resnet_tiny", num_classes=3, compile=True)
    compiled.configure_model()  # compiles in place (lazily: nothing is traced here)
    compiled = TorchSyncBatchNorm().apply(compiled)
    with pytest.raises(ValueError, match=r"torch.compile cannot trace SyncBatchNorm .* BatchNorm layers"):
        compiled.on_fit_start()

    if pytest.importorskip("timm"):
        flattened = ImageClassifier("timm/mobilenetv3_small_050", num_classes=4)
        flattened.configure_model()
        flattened = TorchSyncBatchNorm().apply(flattened)
        with pytest.raises(ValueError, match=r"a BatchNormAct2d, whose forward does more than normalize"):
            flattened.on_fit_start()


def test_cli_installs_the_sync_batchnorm_plugin(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trainer.sync_batchnorm on a CUDA run gets lit_vision's plugin (on CPU it is dropped with a notice,
    see test_distributed); a LayerSync plugin the user names is kept."""
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from lit_vision.plugins import SyncBatchNorm

    monkeypatch.setattr("lit_vision.cli.runs_on_cuda", lambda accelerator="auto": True)
    args = [
        *folder_run_args(tiny_folder, tmp_path),
        "--trainer.accelerator=cpu",  # the Trainer is only built here, never run
        "--trainer.strategy=ddp",
        "--trainer.devices=1",
        "--trainer.sync_batchnorm=true",
    ]
    # Lightning keeps the chosen LayerSync on the strategy (no public accessor)
    cli = main(args, run=False)
    assert type(cli.trainer.strategy._layer_sync) is SyncBatchNorm
    plugins = '--trainer.plugins=[{"class_path": "lightning.pytorch.plugins.TorchSyncBatchNorm"}]'
    cli = main([*args, plugins], run=False)
    assert type(cli.trainer.strategy._layer_sync) is TorchSyncBatchNorm


def test_nothing_asks_cuda_before_the_trainer_starts(tiny_folder: Path, tmp_path: Path) -> None:
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
main({folder_run_args(tiny_folder, tmp_path)!r}, run=False)
print("CALLS", calls)
sys.exit(1 if calls else 0)
"""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


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
