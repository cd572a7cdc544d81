"""Property-based tests (hypothesis) of the batched augmentations and MixUp/CutMix, any batch size >= 1."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_vision.callbacks import MixUpCutMix
from lit_vision.data.transforms import BatchAugment, batch_cutout, batch_hflip, batch_random_crop

# Small images keep every example fast; sizes include odd ones and batch size 1.
batch = st.integers(1, 9)
side = st.integers(5, 20)
settings.register_profile("lit_vision", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("lit_vision")


def images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@given(n=batch, h=side, w=side, padding=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_random_crop_properties(n: int, h: int, w: int, padding: int, seed: int) -> None:
    x = images(n, h, w, seed)
    torch.manual_seed(seed)
    out = batch_random_crop(x, padding)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(n):  # reflect padding only copies pixels: every output value is one of the input's
        assert torch.isin(out[i], x[i]).all()


@given(n=batch, h=side, w=side, seed=st.integers(0, 2**16))
def test_hflip_properties(n: int, h: int, w: int, seed: int) -> None:
    x = images(n, h, w, seed)
    torch.manual_seed(seed)
    out = batch_hflip(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(n):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))


@given(n=batch, h=side, w=side, size=st.integers(0, 12), seed=st.integers(0, 2**16))
def test_cutout_properties(n: int, h: int, w: int, size: int, seed: int) -> None:
    x = images(n, h, w, seed) + 1.0  # > 0, so the fill value 0 is distinguishable
    torch.manual_seed(seed)
    out = batch_cutout(x, size)
    assert out.shape == x.shape and out.dtype == x.dtype
    changed = out != x
    assert (out[changed] == 0).all()  # only filled pixels differ...
    assert (changed.sum((1, 2, 3)) <= 3 * size * size).all()  # ...at most one size x size square each
    assert torch.equal(changed.any(1), changed.all(1))  # the same pixels in every channel


@given(n=batch, h=side, w=side, cutout=st.integers(0, 6), seed=st.integers(0, 2**16))
def test_batch_augment_range(n: int, h: int, w: int, cutout: int, seed: int) -> None:
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    aug = BatchAugment(mean, std, crop_padding=min(4, h - 1, w - 1), cutout=cutout, channels_last=True)
    x = torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    for train in (False, True):
        out = aug(x, train=train)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.is_contiguous(memory_format=torch.channels_last)
        lo = (-torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1)
        hi = ((1 - torch.tensor(mean)) / torch.tensor(std)).view(1, 3, 1, 1)
        assert ((out >= lo - 1e-5) & (out <= hi + 1e-5)).all()  # [0, 255] maps into [lo, hi]


@given(
    n=batch,
    h=side,
    w=side,
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
