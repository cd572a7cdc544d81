"""FGSM: the perturbation is eps in pixel space, raises the loss, never touches parameter grads."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import quiet_trainer

from lit_vision.callbacks import FGSM, fgsm_perturb
from lit_vision.data import ImageDataModule
from lit_vision.models import ImageClassifier

MEAN, STD = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])


def model_with_stats(**kw) -> ImageClassifier:
    model = ImageClassifier("compact_cifar", num_classes=3, **kw)
    model.input_mean.copy_(MEAN)
    model.input_std.copy_(STD)
    return model


def normalized(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    return x * STD.view(1, 3, 1, 1) + MEAN.view(1, 3, 1, 1)


def test_perturbation_is_eps_in_pixel_space_and_stays_in_range() -> None:
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(6, 3, 32, 32, generator=g)
    pixels[:, :, :4] = 0.0  # rows at the range limits: the clamp must keep them inside [0, 1]
    pixels[:, :, 4:8] = 1.0
    model = model_with_stats().eval()
    eps = 8 / 255
    adv = to_pixels(fgsm_perturb(model, normalized(pixels), torch.randint(0, 3, (6,), generator=g), eps))
    delta = (adv - pixels).abs()
    assert float(delta.max()) == pytest.approx(eps, abs=1e-5)
    assert adv.min() >= -1e-5 and adv.max() <= 1 + 1e-5
    interior = (pixels > eps + 1e-3) & (pixels < 1 - eps - 1e-3)
    # every interior pixel with a nonzero gradient moved by exactly eps (no clamping there)
    moved = delta[interior]
    assert (moved > 0).float().mean() > 0.9
    torch.testing.assert_close(moved[moved > 0], torch.full_like(moved[moved > 0], eps), atol=1e-5, rtol=0)


def test_adversarial_loss_exceeds_clean_loss_on_trained_model(tiny_folder: Path) -> None:
    model = ImageClassifier("compact_cifar", num_classes=3, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    dm = ImageDataModule("imagefolder", tiny_folder, batch_size=8, val_size=12)
    quiet_trainer(max_epochs=8).fit(model, datamodule=dm)
    model.eval()
    x, y, *_ = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    with torch.no_grad():
        clean = model.criterion(model(x), y)
    adv = fgsm_perturb(model, x, y, 8 / 255)
    with torch.no_grad():
        attacked = model.criterion(model(adv), y)
    assert attacked > clean * 1.05, (float(clean), float(attacked))


def test_crafting_pass_leaves_parameter_grads_and_bn_stats_alone() -> None:
    torch.manual_seed(0)
    model = model_with_stats().train()
    x = normalized(torch.rand(8, 3, 32, 32))
    y = torch.randint(0, 3, (8,))
    bn = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}

    fgsm_perturb(model, x, y, 8 / 255)
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        if k in bn:
            assert torch.equal(v, bn[k]), k  # the attack's forward did not update BatchNorm statistics

    model.criterion(model(x), y).backward()
    with_attack = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model.load_state_dict({**model.state_dict(), **bn})
    model.criterion(model(x), y).backward()
    for a, b in zip(with_attack, (p.grad for p in model.parameters()), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["replace", "append"])
def test_training_transform_modes_and_adv_every(mode: str) -> None:
    model = model_with_stats()
    fgsm = FGSM(eps=4 / 255, adv_every=2, mode=mode)
    x, y = normalized(torch.rand(5, 3, 32, 32)), torch.randint(0, 3, (5,))
    x0, y0 = fgsm._transform(model, x, y, batch_idx=1)  # not an attack batch
    assert x0 is x and y0 is y
    xa, ya = fgsm._transform(model, x, y, batch_idx=2)
    if mode == "replace":
        assert xa.shape == x.shape and not torch.equal(xa, x) and torch.equal(ya, y)
    else:
        assert xa.shape[0] == 10 and torch.equal(xa[:5], x) and torch.equal(ya, torch.cat([y, y]))
    assert float((to_pixels(xa) - to_pixels(torch.cat([x, x])[: len(xa)])).abs().max()) <= 4 / 255 + 1e-5


def test_robust_test_accuracy_is_logged_under_inference_mode(tiny_folder: Path) -> None:
    model = ImageClassifier("compact_cifar", num_classes=3)
    dm = ImageDataModule("imagefolder", tiny_folder, batch_size=8, val_size=12)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[FGSM(eps=2 / 255, test_eps=8 / 255)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        precision="bf16-mixed",  # crafting also works under CPU autocast
    )
    trainer.fit(model, datamodule=dm)
    (metrics,) = trainer.test(model, datamodule=dm, verbose=False)  # test runs under torch.inference_mode
    assert 0.0 <= metrics["test/adv_acc"] <= 1.0 and "test/acc" in metrics


def test_robust_accuracy_is_below_clean_and_falls_with_eps(tiny_folder: Path) -> None:
    """On a briefly trained model: a radius of 0 gives the clean accuracy, larger radii lower it, and
    ``test/adv_acc`` never exceeds ``test/acc``."""
    torch.manual_seed(0)
    model = ImageClassifier("compact_cifar", num_classes=3, optimizer=partial(torch.optim.Adam, lr=0.01))
    dm = ImageDataModule("imagefolder", tiny_folder, batch_size=8, val_size=12)
    fgsm = FGSM(eps=0.0, test_eps=0.0)  # no adversarial training: the attack's effect stays visible
    trainer = quiet_trainer(max_epochs=4, callbacks=[fgsm])
    trainer.fit(model, datamodule=dm)
    results = {}
    for eps in (0.0, 2 / 255, 16 / 255):
        fgsm.test_eps = eps
        (metrics,) = trainer.test(model, datamodule=dm, verbose=False)
        results[eps] = (metrics["test/acc"], metrics["test/adv_acc"])
    clean = results[0.0][0]
    assert clean >= 0.6, f"the model did not train (test/acc {clean:.2f})"
    assert all(acc == clean for acc, _ in results.values())  # the clean metric ignores the attack
    assert results[0.0][1] == pytest.approx(clean)
    assert clean >= results[2 / 255][1] >= results[16 / 255][1]
    assert results[16 / 255][1] < clean
