"""Transfer learning: pretrained backbone weights, a new head, frozen-then-unfrozen schedule, pretrained
downloads that fail with a message."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import QUIET, TinyCli

from lit_vision.cli import main
from lit_vision.models import ImageClassifier, create_backbone
from lit_vision.models.training.pretrained import classifier_head, load_backbone_weights


class Snapshots(L.Callback):
    """Backbone (non-head) and head weights at the start of fit and after every epoch."""

    def __init__(self) -> None:
        self.body: list[torch.Tensor] = []
        self.head: list[torch.Tensor] = []

    def _take(self, pl_module) -> None:
        head = classifier_head(pl_module.backbone)
        head_ids = {id(p) for p in head.parameters()}
        body = [p for p in pl_module.backbone.parameters() if id(p) not in head_ids and p.ndim > 1]
        self.body.append(torch.cat([p.detach().flatten() for p in body]).clone())
        self.head.append(head.weight.detach().clone())

    def on_train_start(self, trainer, pl_module) -> None:
        self._take(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._take(pl_module)


FINETUNE = ["configs/finetune_imagefolder.yaml"]


def test_finetune_config_on_another_dataset(
    tiny_cifar10_folder: Path, run_cli: TinyCli, tmp_path: Path
) -> None:
    source = main(
        [
            "fit",
            "--config=configs/cifar10_compact.yaml",
            f"--data.data_dir={tiny_cifar10_folder}",
            "--data.val_size=20",
            "--data.batch_size=8",
            "--trainer.max_epochs=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *QUIET,
        ]
    )
    ckpt = Path(source.trainer.log_dir) / "checkpoints" / "last.ckpt"
    pretrained = {k: v for k, v in source.model.state_dict().items() if k.startswith("backbone.")}

    snaps = Snapshots()
    cli = run_cli.build(
        f"--model.pretrained_weights={ckpt}",
        "--finetuning.init_args.unfreeze_backbone_at_epoch=1",
        "--trainer.max_epochs=2",
        configs=FINETUNE,
    )
    cli.trainer.callbacks.append(snaps)
    cli.trainer.fit(cli.model, cli.datamodule)

    assert classifier_head(cli.model.backbone).weight.shape[0] == 3  # new head for the 3 classes
    # at the start, every non-head tensor is the CIFAR-10 checkpoint's (EMA off, so state_dict = raw weights)
    start_model = ImageClassifier("compact_cifar", num_classes=3, backbone_kwargs={"width": 1.5})
    load_backbone_weights(start_model.backbone, ckpt)
    for k, v in start_model.backbone.state_dict().items():
        if not k.startswith("fc."):
            torch.testing.assert_close(v, pretrained[f"backbone.{k}"], rtol=0, atol=0)
    start, after_frozen, after_unfrozen = snaps.body
    torch.testing.assert_close(start, pretrained_body(pretrained, cli.model), rtol=0, atol=0)
    assert torch.equal(start, after_frozen), "epoch 0: the backbone must stay frozen"
    assert not torch.equal(snaps.head[0], snaps.head[1]), "epoch 0: the head trains"
    assert not torch.equal(after_frozen, after_unfrozen), "epoch 1: the backbone trains"


def pretrained_body(pretrained: dict[str, torch.Tensor], model: ImageClassifier) -> torch.Tensor:
    head = {f"backbone.{n}" for n, _ in classifier_head(model.backbone).named_parameters(prefix="fc")}
    names = [f"backbone.{n}" for n, p in model.backbone.named_parameters() if p.ndim > 1]
    return torch.cat([pretrained[n].flatten() for n in names if n not in head])


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    torch.save(create_backbone("resnet_tiny", num_classes=10).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"does not fit this backbone .*only the classifier head may differ"):
        load_backbone_weights(create_backbone("compact_cifar", num_classes=10), tmp_path / "other.pt")
    plain = create_backbone("compact_cifar", num_classes=10)
    torch.save({"model": plain.state_dict()}, tmp_path / "same.pt")  # a training script's own format
    report = load_backbone_weights(create_backbone("compact_cifar", num_classes=4), tmp_path / "same.pt")
    assert report["new_head"] == ["fc.bias", "fc.weight"] and "fc.weight" not in report["loaded"]


def test_pretrained_download_failure_is_explained(monkeypatch) -> None:
    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(
        torchvision.models._api.WeightsEnum, "get_state_dict", lambda self, *a, **k: offline()
    )
    with pytest.raises(
        RuntimeError,
        match=r"Could not download pretrained weights for torchvision/resnet18.*pretrained: false",
    ):
        create_backbone("torchvision/resnet18", num_classes=10, pretrained=True)


def test_timm_pretrained_download_failure_is_explained(monkeypatch) -> None:
    timm = pytest.importorskip("timm")

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", offline)
    with pytest.raises(RuntimeError, match=r"Could not download pretrained weights for timm/resnet18"):
        create_backbone("timm/resnet18", num_classes=10, pretrained=True)


def test_resume_after_unfreezing_keeps_training_the_backbone(run_cli: TinyCli) -> None:
    """Resumed past ``unfreeze_backbone_at_epoch``, the backbone trains on (Lightning's own callback
    restores the optimizer group but leaves the parameters frozen)."""
    args = [
        "--data.batch_size=16",
        "--finetuning.init_args.unfreeze_backbone_at_epoch=1",
        "--trainer.logger.init_args.version=0",
    ]
    first = run_cli("fit", *args, "--trainer.max_epochs=2", configs=FINETUNE)
    groups = len(first.trainer.optimizers[0].param_groups)  # the head's groups + the one added at epoch 1
    last = run_cli.runs / "finetune_imagefolder" / "version_0" / "checkpoints" / "last.ckpt"
    snaps = Snapshots()
    cli = run_cli.build(*args, "--trainer.max_epochs=3", configs=FINETUNE)
    cli.trainer.callbacks.append(snaps)
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=last)
    before, after = snaps.body
    assert not torch.equal(before, after), "the resumed epoch 2 must train the backbone"
    assert len(cli.trainer.optimizers[0].param_groups) == groups  # restored, not added a second time
