"""MixUp/CutMix: valid soft targets, CutMix lambda == kept area, loss == lambda-mix of hard losses, and the
properties of the mix on random batches of any size (hypothesis)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import quiet_trainer
from hypothesis import given
from hypothesis import strategies as st

from lit_vision.callbacks import MixUpCutMix
from lit_vision.data import ImageDataModule
from lit_vision.models import ImageClassifier
from lit_vision.models.training.losses import SoftTargetCrossEntropy


def batch(n: int = 7, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("mode", ["batch", "elem"])
@pytest.mark.parametrize("alphas", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_soft_targets_are_distributions_for_odd_batches(mode: str, alphas: tuple[float, float]) -> None:
    mixer = MixUpCutMix(*alphas, prob=0.8, mode=mode)
    x, y = batch(n=7)
    for seed in range(20):
        mixer.seed(seed)
        xm, soft = mixer.mix(x, y, 5)
        assert xm.shape == x.shape
        if soft.ndim == 1:  # prob < 1: this batch was not mixed at all
            assert torch.equal(xm, x) and torch.equal(soft, y)
            continue
        assert soft.shape == (7, 5) and (soft >= 0).all()
        torch.testing.assert_close(soft.sum(1), torch.ones(7))


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_cutmix_lambda_is_the_kept_area(mode: str) -> None:
    n = 9
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 16, 16).clone()  # image i == i
    y = torch.arange(n)  # one class per image: soft[i, i] is the share of image i that was kept
    mixer = MixUpCutMix(mixup_alpha=0.0, cutmix_alpha=1.0, mode=mode)
    for seed in range(10):
        mixer.seed(seed)
        params = mixer.draw(n, 16, 16)
        mixer.seed(seed)
        xm, soft = mixer.mix(x, y, n)
        for i in range(n):
            own = (xm[i, 0] == i).float().mean()
            if params["perm"][i] != i:
                assert soft[i, i] == pytest.approx(float(own), abs=1e-6)
                assert soft[i, i] == pytest.approx(float(params["lam"][i]), abs=1e-6)
                pasted = (xm[i, 0] == params["perm"][i]).float().mean()
                assert float(own + pasted) == pytest.approx(1.0)  # only x_i and its partner appear
        if mode == "batch":
            assert len(set(params["lam"].tolist())) == 1


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_mixup_loss_is_lambda_mix_of_hard_losses(mode: str) -> None:
    x, y = batch(n=11, k=5)
    mixer = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=0.0, mode=mode)
    mixer.seed(3)
    p = mixer.draw(11, 8, 8)
    mixer.seed(3)
    xm, soft = mixer.mix(x, y, 5)
    lam, perm = torch.tensor(p["lam"], dtype=torch.float32), torch.from_numpy(p["perm"])
    torch.testing.assert_close(xm, lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm])

    logits = torch.randn(11, 5, generator=torch.Generator().manual_seed(0))
    per_sample = -(soft * F.log_softmax(logits, -1)).sum(-1)
    hard = lam * F.cross_entropy(logits, y, reduction="none") + (1 - lam) * F.cross_entropy(
        logits, y[perm], reduction="none"
    )
    torch.testing.assert_close(per_sample, hard)
    torch.testing.assert_close(SoftTargetCrossEntropy(0.0)(logits, soft), hard.mean())
    # Smoothing is applied once, by the loss: (1 - eps) * soft + eps / K.
    eps = 0.1
    smoothed = -(((1 - eps) * soft + eps / 5) * F.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(SoftTargetCrossEntropy(eps)(logits, soft), smoothed)


def test_ranks_draw_different_lambdas_and_seeds_reproduce() -> None:
    a, b, c = (MixUpCutMix(mode="elem") for _ in range(3))
    a.seed(0, rank=0)
    b.seed(0, rank=1)
    c.seed(0, rank=0)
    da, db, dc = a.draw(16, 8, 8), b.draw(16, 8, 8), c.draw(16, 8, 8)
    assert not (da["lam"] == db["lam"]).all()
    assert (da["lam"] == dc["lam"]).all() and (da["perm"] == dc["perm"]).all()


def test_training_mixes_validation_does_not_and_stop_epoch(tiny_folder: Path, tmp_path: Path) -> None:
    model = ImageClassifier("compact_cifar", num_classes=3, label_smoothing=0.1)
    seen: list[tuple[bool, int, int]] = []  # (training, epoch, target ndim)
    forward = model.criterion.forward

    def spy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append((model.training, model.current_epoch, target.ndim))
        return forward(logits, target)

    model.criterion.forward = spy
    trainer = quiet_trainer(max_epochs=3, callbacks=[MixUpCutMix(stop_epoch=2)], num_sanity_val_steps=0)
    trainer.fit(model, datamodule=ImageDataModule("imagefolder", tiny_folder, batch_size=8, val_size=12))
    train = [(e, nd) for training, e, nd in seen if training]
    val = [nd for training, _, nd in seen if not training]
    assert {nd for e, nd in train if e < 2} == {2}  # soft targets while mixing
    assert {nd for e, nd in train if e == 2} == {1}  # clean labels from stop_epoch on
    assert val and set(val) == {1}
    assert model._train_batch_transforms == []  # removed at teardown


def test_label_smoothing_is_applied_once_with_mixing(tiny_folder: Path) -> None:
    """Through training_step with MixUp/CutMix and label_smoothing 0.1: the targets are plain mixes of two
    labels (no smoothing mass added by the mixing), and the loss training_step returns smooths them once."""
    torch.manual_seed(0)
    eps, k = 0.1, 3
    model = ImageClassifier("compact_cifar", num_classes=k, label_smoothing=eps)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    returned: list[torch.Tensor] = []
    forward, training_step = model.criterion.forward, model.training_step

    def spy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append((logits.detach().float(), target.detach()))
        return forward(logits, target)

    def step(batch, batch_idx):
        loss = training_step(batch, batch_idx)
        returned.append(loss.detach())
        return loss

    model.criterion.forward, model.training_step = spy, step
    trainer = quiet_trainer(max_steps=4, callbacks=[MixUpCutMix()], limit_val_batches=0)
    trainer.fit(model, datamodule=ImageDataModule("imagefolder", tiny_folder, batch_size=8, val_size=12))
    assert len(seen) == len(returned) == 4
    for (logits, target), loss in zip(seen, returned, strict=True):
        assert target.shape == logits.shape  # soft targets
        torch.testing.assert_close(target.sum(-1), torch.ones(len(target)))
        assert int((target > 0).sum(-1).max()) <= 2 and float(target.min()) == 0.0
        once = -(((1 - eps) * target + eps / k) * F.log_softmax(logits, -1)).sum(-1).mean()
        torch.testing.assert_close(loss, once)
    assert any(not torch.equal(t, t.round()) for _, t in seen)  # real mixes, not only one-hot rows


# ------------------------------------------------------------------ properties on random batches (hypothesis)
# Small images keep every example fast; sizes include odd ones and batch size 1 (the hypothesis profile,
# max_examples and derandomize, is set in conftest.py).
batch_sizes = st.integers(1, 9)
sides = st.integers(5, 20)


def images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@given(
    n=batch_sizes,
    h=sides,
    w=sides,
    k=st.integers(2, 12),
    alphas=st.sampled_from([(0.8, 1.0), (0.2, 0.0), (0.0, 1.0)]),
    mode=st.sampled_from(["batch", "elem"]),
    prob=st.sampled_from([0.0, 0.5, 1.0]),
    soft_in=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_mixing_properties(
    n: int,
    h: int,
    w: int,
    k: int,
    alphas: tuple[float, float],
    mode: str,
    prob: float,
    soft_in: bool,
    seed: int,
) -> None:
    mixer = MixUpCutMix(*alphas, prob=prob, mode=mode)
    mixer.seed(seed)
    x = images(n, h, w, seed)
    labels = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    y = torch.softmax(torch.randn(n, k), 1) if soft_in else labels
    out, target = mixer.mix(x, y, k)
    assert out.shape == x.shape and out.dtype == x.dtype
    # every mixed pixel is a convex combination of two images' pixels: inside the batch's value range
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6
    if target.ndim == 1:  # nothing mixed: labels untouched
        assert torch.equal(target, labels) and torch.equal(out, x)
        return
    assert target.shape == (n, k) and target.dtype == torch.float32
    assert ((target >= 0) & (target <= 1 + 1e-6)).all()
    np.testing.assert_allclose(target.sum(1).numpy(), np.ones(n), atol=1e-5)  # each row a distribution
    assert abs(target.sum().item() - n) < 1e-4  # no label mass is created or lost
    if (
        mode == "batch"
    ):  # one lambda for all: each class's total mass is preserved (partners are a permutation)
        total_in = y if soft_in else torch.nn.functional.one_hot(labels, k).float()
        torch.testing.assert_close(target.sum(0), total_in.sum(0), atol=1e-4, rtol=0)
