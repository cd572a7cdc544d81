"""Batched augmentation policies (lit_vision.data.policies): each operation against torchvision's own on
uint8 images, per-image independence, seeding, magnitude 0, and the datamodule/preview/report paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from helpers import ROOT, make_imagefolder

from lit_vision.data import ImageDataModule
from lit_vision.data.policies import (
    OPS,
    apply_ops,
    batch_color_jitter,
    batch_random_erasing,
    rand_augment,
    trivial_augment_wide,
)
from lit_vision.data.transforms import BatchAugment


def images(n: int = 6, seed: int = 0, size: int = 16) -> torch.Tensor:
    """uint8 (n, 3, size, size) with structure (a gradient plus noise), so every op has something to do."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 200, size).view(1, 1, 1, size)
    noise = torch.randint(0, 56, (n, 3, size, size), generator=g)
    return (ramp + noise).clamp(0, 255).to(torch.uint8)


def one_op(x: torch.Tensor, name: str, value: float) -> torch.Tensor:
    n = len(x)
    op = torch.full((n,), OPS.index(name))
    return apply_ops(x.float(), op, torch.full((n,), float(value)))


# (name, value, torchvision's function on uint8, allowed difference in grey levels: torchvision truncates
# its float intermediates to uint8 where we round)
REFERENCES = [
    ("posterize", 3, lambda x: TF.posterize(x, 3), 0),
    ("solarize", 128, lambda x: TF.solarize(x, 128), 0),
    ("equalize", 0, TF.equalize, 0),
    ("autocontrast", 0, TF.autocontrast, 1),
    ("brightness", 0.5, lambda x: TF.adjust_brightness(x, 1.5), 1),
    ("contrast", -0.4, lambda x: TF.adjust_contrast(x, 0.6), 2),
    ("color", 0.7, lambda x: TF.adjust_saturation(x, 1.7), 2),
    ("sharpness", 0.9, lambda x: TF.adjust_sharpness(x, 1.9), 1),
    ("translate_x", 3, lambda x: TF.affine(x, 0.0, [3, 0], 1.0, [0.0, 0.0]), 0),
    ("translate_y", -2, lambda x: TF.affine(x, 0.0, [0, -2], 1.0, [0.0, 0.0]), 0),
]


@pytest.mark.parametrize(
    ("name", "value", "reference", "tolerance"), REFERENCES, ids=[r[0] for r in REFERENCES]
)
def test_operation_matches_torchvision(name, value, reference, tolerance) -> None:
    x = images()
    ours = one_op(x, name, value)
    theirs = reference(x).float()
    assert ours.shape == x.shape and ours.dtype == torch.float32
    assert float((ours - theirs).abs().max()) <= tolerance
    assert not torch.equal(ours, x.float())  # the op did something on these images


def test_rotation_by_a_right_angle_is_a_pixel_permutation() -> None:
    x = images(size=15)  # odd side: the centre is a pixel, so 90 degrees maps pixels onto pixels
    ours = one_op(x, "rotate", 90.0)
    assert torch.equal(ours, torch.rot90(x, 1, (2, 3)).float()) or torch.equal(
        ours, torch.rot90(x, -1, (2, 3)).float()
    )


@pytest.mark.parametrize("name", [n for n in OPS if n not in ("autocontrast", "equalize")])
def test_magnitude_zero_is_the_identity(name: str) -> None:
    """Every operation that has a magnitude leaves the image as it is at magnitude 0 (solarize's threshold
    is then 255: images below it stay)."""
    x = images().clamp(max=254)
    value = 8 if name == "posterize" else 255 if name == "solarize" else 0
    assert torch.equal(one_op(x, name, value), x.float())


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "jitter", "erasing"])
def test_policies_shape_range_seed_and_independence(policy: str) -> None:
    def run(x: torch.Tensor, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        if policy == "randaugment":
            return rand_augment(x.float(), num_ops=2, magnitude=9)
        if policy == "trivialaugment":
            return trivial_augment_wide(x.float())
        if policy == "jitter":
            return batch_color_jitter(x.float(), 0.4, 0.4, 0.4)
        return batch_random_erasing(x.float(), p=1.0, value=0.0)

    same = images(1).expand(64, -1, -1, -1).contiguous()  # one image, 64 times
    out = run(same, 0)
    assert out.shape == same.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 255
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 8, "each image of a batch must get its own draw"
    assert torch.equal(run(same, 0), out) and not torch.equal(run(same, 1), out)


def test_batch_augment_with_a_policy_normalizes_after_the_pixel_ops() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.25, 0.25)
    aug = BatchAugment(mean, std, crop_padding=0, hflip=False, policy="trivialaugment")
    x = images(32)
    torch.manual_seed(0)
    out = aug(x, train=True)
    torch.manual_seed(0)
    expected = (trivial_augment_wide(x.float()) / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    plain = BatchAugment(mean, std, crop_padding=0, hflip=False, policy="trivialaugment")(x, train=False)
    torch.testing.assert_close(plain, BatchAugment(mean, std)(x, train=False))  # evaluation: no policy
    with pytest.raises(ValueError, match="policy must be"):
        BatchAugment(mean, std, policy="autoaugment")


def test_torchvision_pipeline_checks(tmp_path) -> None:
    from lit_vision.data.torchvision_pipeline import TorchvisionTransform

    flip = TorchvisionTransform([{"name": "RandomHorizontalFlip", "p": 1.0}])
    x = images(1)[0]
    assert torch.equal(flip(x), x.flip(-1))
    with pytest.raises(ValueError, match="normalization runs batched"):
        TorchvisionTransform([{"name": "Normalize", "mean": [0, 0, 0], "std": [1, 1, 1]}])
    with pytest.raises(ValueError, match="Did you mean: RandomHorizontalFlip"):
        TorchvisionTransform([{"name": "RandomHorizontalFlp"}])
    with pytest.raises(TypeError, match="crop or resize back to the training size"):
        TorchvisionTransform([{"name": "Resize", "size": 8}])(x)


@pytest.mark.parametrize(
    "config",
    [
        "configs/augment/randaugment.yaml",
        "configs/augment/torchvision.yaml",
        "configs/augment/albumentations.yaml",
    ],
)
def test_augment_preview_shows_the_configs_pipeline(config: str, tmp_path) -> None:
    from PIL import Image

    from lit_vision.augment_preview import main

    data = make_imagefolder(tmp_path / "data", 2, n_train=8, n_test=None)
    args = [
        "--images=3",
        "--draws=4",
        "--scale=2",
        f"--out={tmp_path / 'grid.png'}",
        f"--config={ROOT / 'configs/cifar10_compact.yaml'}",
        f"--config={ROOT / config}",
        "--data.dataset=imagefolder",
        f"--data.data_dir={data}",
        "--data.val_size=4",
    ]
    path = main(args)
    with Image.open(path) as grid:
        # 5 columns (the image, 4 draws) x 3 rows of 32x32 images at 2x, with 4-pixel gaps around each
        assert grid.size == (5 * (64 + 4) + 4, 3 * (64 + 4) + 4)


# ------------------------------------------------------------------ the policies in the training pipeline
# What fit trains on: ImageDataModule's own batched augmentation (build_batch_augment -> BatchAugment) of a
# training batch, through augment_train_batch. Crop and flip are off so that only the options under test
# draw from torch's RNG; the expected batch applies the policy functions directly in BatchAugment's order
# (pixel policy, colour jitter, normalization, random erasing) from the same seed.


def _training_batch(data: Path, seed: int, **augment) -> tuple[torch.Tensor, torch.Tensor, ImageDataModule]:
    """(uint8 batch, the augmented batch fit trains on under ``seed``, the datamodule)."""
    dm = ImageDataModule(
        dataset="imagefolder",
        data_dir=data,
        val_size=12,
        batch_size=48,  # the whole train split: every class, many draws
        crop_padding=0,
        hflip=False,
        **augment,
    )
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    torch.manual_seed(seed)
    return images, dm.augment_train_batch(images, torch.arange(len(images)), epoch=0), dm


def _normalized(x: torch.Tensor, dm: ImageDataModule) -> torch.Tensor:
    mean, std = torch.tensor(dm.mean).view(1, 3, 1, 1), torch.tensor(dm.std).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


# (id, datamodule settings, pixel ops before normalization, ops after it), each on float [0, 255] batches
PIPELINES = [
    ("randaugment", {"policy": "randaugment"}, lambda x: rand_augment(x, 2, 9), None),
    (
        "randaugment-3-ops-magnitude-25",
        {"policy": "randaugment", "num_ops": 3, "magnitude": 25},
        lambda x: rand_augment(x, 3, 25),
        None,
    ),
    ("trivialaugment", {"policy": "trivialaugment"}, trivial_augment_wide, None),
    ("color_jitter", {"color_jitter": 0.4}, lambda x: batch_color_jitter(x, 0.4, 0.4, 0.4), None),
    ("random_erasing", {"random_erasing": 0.5}, None, lambda x: batch_random_erasing(x, 0.5, value=0.0)),
    (
        "randaugment+color_jitter+random_erasing",
        {"policy": "randaugment", "num_ops": 1, "magnitude": 15, "color_jitter": 0.3, "random_erasing": 1.0},
        lambda x: batch_color_jitter(rand_augment(x, 1, 15), 0.3, 0.3, 0.3),
        lambda x: batch_random_erasing(x, 1.0, value=0.0),
    ),
]


@pytest.mark.parametrize(
    ("settings", "pixel_ops", "normalized_ops"), [p[1:] for p in PIPELINES], ids=[p[0] for p in PIPELINES]
)
def test_training_batches_go_through_the_configured_augmentation(
    tiny_folder: Path, settings, pixel_ops, normalized_ops
) -> None:
    images, out, dm = _training_batch(tiny_folder, 0, **settings)
    torch.manual_seed(0)
    expected = images.float()
    if pixel_ops is not None:
        expected = pixel_ops(expected)
    expected = _normalized(expected, dm)
    if normalized_ops is not None:
        expected = normalized_ops(expected)
    torch.testing.assert_close(out, expected)
    plain = _training_batch(tiny_folder, 0)[1]  # the same batch with none of these options
    torch.testing.assert_close(plain, _normalized(images.float(), dm))
    changed = (out != plain).flatten(1).any(1)
    assert changed.float().mean() > 0.4, "too few images of the batch changed"
    assert torch.equal(_training_batch(tiny_folder, 0, **settings)[1], out), "not repeatable under a seed"
    assert not torch.equal(_training_batch(tiny_folder, 1, **settings)[1], out), "the seed is not used"


def test_randaugment_magnitude_and_num_ops_reach_the_training_batches(tiny_folder: Path) -> None:
    """A stronger setting changes the training images more; each setting gives its own batch."""
    plain = _training_batch(tiny_folder, 0)[1]

    def change(**settings) -> tuple[torch.Tensor, float]:
        out = _training_batch(tiny_folder, 0, policy="randaugment", **settings)[1]
        return out, float((out - plain).abs().mean())

    weak, weak_change = change(num_ops=2, magnitude=0)
    strong, strong_change = change(num_ops=2, magnitude=30)
    one, one_change = change(num_ops=1, magnitude=15)
    three, three_change = change(num_ops=3, magnitude=15)
    assert not torch.equal(weak, strong) and not torch.equal(one, three)
    assert strong_change > 2 * weak_change
    assert three_change > one_change
