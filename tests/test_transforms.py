from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

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
