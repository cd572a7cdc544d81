"""The batched crop, flip, Cutout and normalization against their definitions, and their properties on random
batches of any size (hypothesis)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from lit_vision.data.transforms import BatchAugment, batch_cutout, batch_hflip, batch_random_crop


def test_random_crop_is_a_window_of_the_reflect_padded_image() -> None:
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    out = batch_random_crop(x, padding=2)
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    shifts = set()
    for i in range(16):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(padded[i, :, dy : dy + 8, dx : dx + 8], out[i])
        ]
        assert matches, f"sample {i} is not a crop of its padded image"
        shifts.add(matches[0])
    assert len(shifts) > 3  # shifts are drawn per sample, not once per batch
    assert torch.equal(batch_random_crop(x, 0), x)


def test_hflip_flips_about_half() -> None:
    torch.manual_seed(0)
    x = torch.rand(400, 1, 2, 3)
    out = batch_hflip(x)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert bool((flipped | kept).all())
    assert 150 < int(flipped.sum()) < 250


def test_cutout_masks_one_clipped_square() -> None:
    torch.manual_seed(0)
    x = torch.ones(64, 3, 16, 16)
    out = batch_cutout(x, size=4)
    holes = out[:, 0] == 0
    assert bool((holes == (out == 0).all(1)).all())  # the same pixels in every channel
    areas = holes.flatten(1).sum(1)
    assert int(areas.max()) == 16 and int(areas.min()) >= 4  # 4x4, clipped to >= 2x2 at the corners
    assert torch.equal(batch_cutout(x, 0), x)


def test_normalize_matches_definition_and_eval_is_deterministic() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    aug = BatchAugment(mean, std, crop_padding=4, hflip=True, cutout=8)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(aug(x, train=False), expected)
    torch.testing.assert_close(aug(x, train=False), aug(x, train=False))
    torch.manual_seed(1)
    assert not torch.allclose(aug(x, train=True), expected)


@pytest.mark.parametrize("channels_last", [False, True])
def test_memory_format(channels_last: bool) -> None:
    aug = BatchAugment((0.5,) * 3, (0.25,) * 3, channels_last=channels_last)
    out = aug(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), train=True)
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


# ------------------------------------------------------------------ properties on random batches (hypothesis)
# Small images keep every example fast; sizes include odd ones and batch size 1 (the hypothesis profile,
# max_examples and derandomize, is set in conftest.py).
batch_sizes = st.integers(1, 9)
sides = st.integers(5, 20)


def images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@given(n=batch_sizes, h=sides, w=sides, padding=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_random_crop_properties(n: int, h: int, w: int, padding: int, seed: int) -> None:
    x = images(n, h, w, seed)
    torch.manual_seed(seed)
    out = batch_random_crop(x, padding)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(n):  # reflect padding only copies pixels: every output value is one of the input's
        assert torch.isin(out[i], x[i]).all()


@given(n=batch_sizes, h=sides, w=sides, seed=st.integers(0, 2**16))
def test_hflip_properties(n: int, h: int, w: int, seed: int) -> None:
    x = images(n, h, w, seed)
    torch.manual_seed(seed)
    out = batch_hflip(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(n):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))


@given(n=batch_sizes, h=sides, w=sides, size=st.integers(0, 12), seed=st.integers(0, 2**16))
def test_cutout_properties(n: int, h: int, w: int, size: int, seed: int) -> None:
    x = images(n, h, w, seed) + 1.0  # > 0, so the fill value 0 is distinguishable
    torch.manual_seed(seed)
    out = batch_cutout(x, size)
    assert out.shape == x.shape and out.dtype == x.dtype
    changed = out != x
    assert (out[changed] == 0).all()  # only filled pixels differ...
    assert (changed.sum((1, 2, 3)) <= 3 * size * size).all()  # ...at most one size x size square each
    assert torch.equal(changed.any(1), changed.all(1))  # the same pixels in every channel


@given(n=batch_sizes, h=sides, w=sides, cutout=st.integers(0, 6), seed=st.integers(0, 2**16))
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
