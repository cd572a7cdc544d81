"""lit_vision's SyncBatchNorm plugin (``trainer.sync_batchnorm`` on a multi-GPU run), checked on the CPU:
timm's BatchNorm+activation layers keep their activation, revert restores the built model, and what would
train wrong or slowly is refused, naming the layer. (On CPU the CLI drops sync_batchnorm with a notice:
test_distributed.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TinyCli

from lit_vision.models import ImageClassifier


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


def test_cli_installs_the_sync_batchnorm_plugin(run_cli: TinyCli, monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer.sync_batchnorm on a CUDA run gets lit_vision's plugin (on CPU it is dropped with a notice,
    see test_distributed); a LayerSync plugin the user names is kept."""
    from lightning.pytorch.plugins import TorchSyncBatchNorm

    from lit_vision.plugins import SyncBatchNorm

    monkeypatch.setattr("lit_vision.cli.runs_on_cuda", lambda accelerator="auto": True)
    args = [
        "--trainer.accelerator=cpu",  # the Trainer is only built here, never run
        "--trainer.strategy=ddp",
        "--trainer.devices=1",
        "--trainer.sync_batchnorm=true",
    ]
    # Lightning keeps the chosen LayerSync on the strategy (no public accessor)
    cli = run_cli.build(*args)
    assert type(cli.trainer.strategy._layer_sync) is SyncBatchNorm
    plugins = '--trainer.plugins=[{"class_path": "lightning.pytorch.plugins.TorchSyncBatchNorm"}]'
    cli = run_cli.build(*args, plugins)
    assert type(cli.trainer.strategy._layer_sync) is TorchSyncBatchNorm
