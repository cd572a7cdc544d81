"""The airbench94 recipe's parts, each against the paper's formula: whitening, Dirac init, alternating flip,
decoupled SGD and its parameter groups, the triangular schedule, val_size 0.

The recipe end to end (fit, test with TTA, predict) runs in test_cli.py with configs/speedrun/cifar10_94.yaml;
its Lookahead EMA is tested in test_ema.py, its logit-averaging TTA in test_tta.py.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import QUIET, REAL_CIFAR10, ROOT, TinyCli
from lightning.pytorch.plugins.precision import Precision
from torch import nn

from lit_vision.cli import main
from lit_vision.data import ImageDataModule
from lit_vision.models import DecoupledSGD, ImageClassifier, TriangleLR, create_backbone
from lit_vision.models.training.schedulers import build_scheduler, extend_kwargs
from lit_vision.models.zoo.airbench import PatchWhitening, dirac_init_

REAL = REAL_CIFAR10


# ------------------------------------------------------------------------------------------------- whitening
def real_images(count: int) -> torch.Tensor:
    """The first ``count`` / 10 JPEGs of each class of the real CIFAR-10 train split, uint8 (N, 3, 32, 32)."""
    from PIL import Image

    per_class = count // 10
    arrays = [
        np.asarray(Image.open(f).convert("RGB"))
        for class_dir in sorted((REAL / "train").iterdir())
        for f in sorted(class_dir.iterdir())[:per_class]
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def smooth_images(count: int) -> torch.Tensor:
    """Generated images whose neighbouring pixels and channels are strongly correlated, like photos."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(count, 1, 36, 36, generator=g)
    x = nn.functional.avg_pool2d(x, 5, stride=1)  # (N, 1, 32, 32), spatially smooth
    colour = torch.tensor([1.0, 0.9, 0.7]).view(1, 3, 1, 1)
    return (x * colour + 0.1 * torch.randn(count, 3, 32, 32, generator=g)).mul(60).add(128).clamp(0, 255)


@pytest.mark.parametrize(
    "source",
    [
        "generated",
        pytest.param(
            "real",
            marks=pytest.mark.skipif(not (REAL / "train").is_dir(), reason=f"no real CIFAR-10 at {REAL}"),
        ),
    ],
)
def test_patch_whitening_whitens(source: str) -> None:
    images = (real_images(1000) if source == "real" else smooth_images(1000)).float() / 255
    x = (images - images.mean((0, 2, 3), keepdim=True)) / images.std((0, 2, 3), keepdim=True)

    def output_covariance(layer: PatchWhitening) -> torch.Tensor:
        with torch.no_grad():
            y = nn.functional.conv2d(x.double(), layer.weight.double())  # (N, 24, 31, 31), no bias
        half = y[:, :12].permute(1, 0, 2, 3).reshape(12, -1)  # the positive filters
        torch.testing.assert_close(y[:, 12:], -y[:, :12])  # the negatives are their exact mirror
        return half @ half.T / half.shape[1]

    exact = PatchWhitening(eps=1e-12)
    exact.fit(x)
    raw = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    raw_cov = raw.T @ raw / len(raw)
    assert (raw_cov - torch.diag(raw_cov.diag())).abs().max() > 0.3  # the input patches are far from white
    torch.testing.assert_close(
        output_covariance(exact), torch.eye(12, dtype=torch.float64), atol=1e-5, rtol=0
    )

    # the shipped eps damps only the weakest directions: diag = lambda / (lambda + eps), off-diagonals 0
    damped = PatchWhitening()
    damped.fit(x)
    cov = output_covariance(damped)
    eigenvalues = torch.linalg.eigvalsh(raw_cov).flip(0)
    torch.testing.assert_close(cov.diag(), eigenvalues / (eigenvalues + 5e-4), atol=1e-5, rtol=0)
    assert (cov - torch.diag(cov.diag())).abs().max() < 1e-5
    assert not damped.weight.requires_grad and damped.bias.requires_grad


def test_dirac_init_makes_a_fresh_conv_an_identity_on_its_first_channels() -> None:
    torch.manual_seed(0)
    conv = dirac_init_(nn.Conv2d(24, 64, 3, padding=1, bias=False))
    x = torch.randn(2, 24, 9, 9)
    with torch.no_grad():
        y = conv(x)
    torch.testing.assert_close(y[:, :24], x)
    assert y[:, 24:].abs().mean() > 0.1  # the other channels keep their random init
    net = create_backbone("airbench94", num_classes=10)
    for group in net.groups:
        for conv in (group.conv1, group.conv2):
            n = min(conv.in_channels, conv.out_channels)
            torch.testing.assert_close(conv.weight[:n, :, 1, 1], torch.eye(n, conv.in_channels))
    # frozen BN scale; the whitening bias trains for whiten_bias_epochs epochs, then stops
    assert all(not g.norm1.weight.requires_grad and g.norm1.bias.requires_grad for g in net.groups)
    net.set_epoch(2)
    assert net.whiten.bias.requires_grad
    net.set_epoch(3)
    assert not net.whiten.bias.requires_grad


# ------------------------------------------------------------------------------------------- alternating flip
def flips_per_epoch(data: Path, epochs: int, seed: int = 0) -> dict[int, list[bool]]:
    """For each train image index: whether the batched transform flipped it, epoch by epoch."""
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    dm = ImageDataModule(
        dataset="imagefolder", data_dir=data, val_size=12, batch_size=8, crop_padding=0, alternating_flip=True
    )
    dm.setup("fit")
    seen: dict[int, list[bool]] = {}
    for epoch in range(epochs):
        # what the hooks read; the default (32-true) precision plugin leaves float32 images as they are
        dm.trainer = SimpleNamespace(
            training=True, current_epoch=epoch, world_size=1, precision_plugin=Precision()
        )
        for images, targets, index in dm.train_dataloader():
            out, out_targets = dm.on_after_batch_transfer((images, targets, index), 0)
            plain = dm.batch_transform(images)  # normalized, unaugmented
            assert torch.equal(out_targets, targets)
            for i, o, p in zip(index.tolist(), out, plain, strict=True):
                flipped = torch.equal(o, p.flip(2))
                assert flipped or torch.equal(o, p)
                seen.setdefault(i, []).append(flipped)
    return seen


def test_alternating_flip_flips_every_image_every_other_epoch(tiny_folder: Path) -> None:
    seen = flips_per_epoch(tiny_folder, epochs=4)
    full = {i: f for i, f in seen.items() if len(f) == 4}  # images of a dropped last batch miss epochs
    assert len(full) >= 32
    for flips in full.values():
        assert all(a != b for a, b in itertools.pairwise(flips))  # exactly every other epoch
    starts = [f[0] for f in full.values()]
    assert 0 < sum(starts) < len(starts)  # the first choice is random per image
    # a function of (run seed, image): a resumed run (a fresh datamodule) repeats it; another seed does not
    assert flips_per_epoch(tiny_folder, epochs=4) == seen
    other = flips_per_epoch(tiny_folder, epochs=1, seed=1)
    assert [other[i][0] for i in sorted(other)] != [seen[i][0] for i in sorted(other)]


# ------------------------------------------------------------------------------- optimizer, groups, schedule
def test_decoupled_sgd_matches_the_papers_units() -> None:
    params = [nn.Parameter(torch.ones(3))]
    opt = DecoupledSGD(params, lr=11.5, momentum=0.85, weight_decay=0.0153, batch_size=1024)
    kilostep = 1024 * (1 + 1 / (1 - 0.85))
    # airbench (summed loss): lr_sum = 11.5 / kilostep per example; a mean loss over 1024 needs 1024x that
    assert opt.param_groups[0]["lr"] == pytest.approx(11.5 / kilostep * 1024)
    # decay per step = lr x weight_decay = the paper's wd = 0.0153 * batch / kilostep
    group = opt.param_groups[0]
    assert group["lr"] * group["weight_decay"] == pytest.approx(0.0153 * 1024 / kilostep)
    assert group["nesterov"] and group["momentum"] == 0.85
    half = DecoupledSGD(params, lr=11.5, momentum=0.85, weight_decay=0.0153, batch_size=512).param_groups[0]
    assert half["lr"] == pytest.approx(group["lr"] / 2)  # the same step per example
    with pytest.raises(ValueError, match="batch_size"):
        DecoupledSGD(params)


def test_speedrun_parameter_groups_follow_the_paper(tiny_cifar10_folder: Path, tmp_path: Path) -> None:
    cli = main(
        [
            "--config", str(ROOT / "configs/speedrun/cifar10_94.yaml"),
            f"--data.data_dir={tiny_cifar10_folder}", "--data.val_size=20", "--data.batch_size=16",
            "--trainer.accumulate_grad_batches=2", *QUIET,
        ],
        run=False,
    )  # fmt: skip
    cli.trainer.fit_loop.max_epochs = 0  # set up the optimizer without training
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    model, opt = cli.model, cli.trainer.optimizers[0]
    kilostep = 1024 * (1 + 1 / (1 - 0.85))
    lr = 11.5 * 32 / kilostep  # batch_size filled in: 16 per step x 2 accumulated
    decay, biases = opt.param_groups
    assert decay["initial_lr"] == pytest.approx(lr) and biases["initial_lr"] == pytest.approx(64 * lr)
    per_step = 0.0153 * 32 / kilostep
    assert decay["initial_lr"] * decay["weight_decay"] == pytest.approx(per_step)
    assert biases["initial_lr"] * biases["weight_decay"] == pytest.approx(per_step)
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(p) for p in biases["params"]} == bn_biases
    backbone = model.backbone
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(backbone.whiten.weight) not in trained and id(backbone.whiten.bias) in trained
    assert all(id(m.weight) not in trained for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # the whitening filters were computed from the training images when fit started (not the random init)
    fresh = PatchWhitening()
    images = cli.datamodule.train_images(5000).float() / 255
    fresh.fit(model.normalize(images))
    torch.testing.assert_close(backbone.whiten.weight, fresh.weight)


def test_triangle_schedule_is_the_papers() -> None:
    total = 426  # 9.9 epochs of 43 steps
    opt = torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1.0)
    sched = TriangleLR(opt, total_steps=total)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # airbench's triangle(): linear interpolation through (0, 0.2), (int(0.23 T), 1), (T, 0.07)
    expected = np.interp(np.arange(total + 1), [0, int(0.23 * total), total], [0.2, 1.0, 0.07])
    np.testing.assert_allclose(lrs, expected, atol=1e-9)
    # resumed into a longer run (on_schedule_change: extend): the peak stays at its step
    longer = build_scheduler(TriangleLR, opt, 600, **extend_kwargs(sched, TriangleLR, total, 600))
    assert longer.peak_step == sched.peak_step == 97


# ------------------------------------------------------------------------------------------------- val_size 0
def test_val_size_zero_trains_on_everything_and_keeps_test_and_predict(run_cli: TinyCli) -> None:
    no_val = "--data.val_size=0"
    fit = run_cli("fit", no_val, "--trainer.max_epochs=2")
    dm = fit.datamodule
    assert len(dm.split("train").indices) == 60 and len(dm.split("val").indices) == 0
    assert fit.trainer.global_step == 2 * (60 // 8)
    assert "val/acc" not in fit.trainer.callback_metrics
    last = fit.checkpoints / "last.ckpt"
    assert last.is_file()
    test = run_cli("test", no_val, f"--ckpt_path={last}")
    assert 0 <= float(test.trainer.callback_metrics["test/acc"]) <= 1
    run_cli("predict", no_val, f"--ckpt_path={last}")
    assert (last.parent.parent / "predictions.csv").is_file()


def test_val_size_zero_without_a_test_split_says_what_to_do(tiny_folder: Path, tmp_path: Path) -> None:
    dm = ImageDataModule(dataset="imagefolder", data_dir=tiny_folder, val_size=0, predict_split="val")
    dm.setup("predict")
    with pytest.raises(Exception, match="val_size=0"):
        dm.predict_dataloader()


def test_classifier_without_a_datamodule_refuses_data_init() -> None:
    model = ImageClassifier(backbone="airbench94")
    with pytest.raises(TypeError, match="train_images"):
        model.init_backbone_from_data(object())
