"""The normalization contract (``lit_vision.data.normalization``): every user of mean/std agrees with it."""

from __future__ import annotations

from pathlib import Path

import torch

from lit_vision.data import ImageDataModule
from lit_vision.data.normalization import affine, denormalize, normalize, pixel_bounds, pixels_to_units
from lit_vision.data.transforms import BatchAugment
from lit_vision.export import ExportWrapper
from lit_vision.models import ImageClassifier

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def uint8_batch(n: int = 4, size: int = 8) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_the_formula_and_its_inverse() -> None:
    x = uint8_batch()
    expected = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x, MEAN, STD, scale=255.0), expected)
    torch.testing.assert_close(normalize(x.float() / 255, MEAN, STD), expected)
    torch.testing.assert_close(denormalize(expected, MEAN, STD), x.float() / 255)
    a, b = affine(MEAN, STD, 255.0)
    torch.testing.assert_close(x.float() * a + b, expected)
    lo, hi = pixel_bounds(MEAN, STD)
    torch.testing.assert_close(lo, normalize(torch.zeros(1, 3, 1, 1), MEAN, STD))
    torch.testing.assert_close(hi, normalize(torch.ones(1, 3, 1, 1), MEAN, STD))
    # a step of 8/255 in pixels moves the normalized input by 8/255/std
    step = pixels_to_units(8 / 255, STD)
    moved = normalize(torch.full((1, 3, 1, 1), 0.5 + 8 / 255), MEAN, STD) - normalize(
        torch.full((1, 3, 1, 1), 0.5), MEAN, STD
    )
    torch.testing.assert_close(step, moved)


def test_training_batches_the_model_and_export_agree() -> None:
    """The uint8 training path, the model's [0, 1] path and the exported graph give the same input."""
    x = uint8_batch()
    model = ImageClassifier(num_classes=3)
    model.input_mean.copy_(torch.tensor(MEAN))
    model.input_std.copy_(torch.tensor(STD))
    from_batch = BatchAugment(MEAN, STD, crop_padding=0, hflip=False)(x, train=False)
    from_model = model.normalize(x.float() / 255)
    torch.testing.assert_close(from_batch, from_model)
    for kind, scale in (("uint8", 1.0), ("float", 255.0)):
        wrapper = ExportWrapper(model, input_kind=kind)
        torch.testing.assert_close(x.float() / scale * wrapper.a + wrapper.b, from_model)


def test_the_model_takes_the_datamodules_public_statistics(tiny_folder: Path) -> None:
    """mean, std and input_size are the datamodule's public contract; the model copies them in setup."""
    dm = ImageDataModule("imagefolder", tiny_folder, batch_size=4, val_size=12, image_size=16)
    dm.setup("fit")
    model = ImageClassifier(num_classes=3)

    class Trainer:  # what ImageClassifier.setup reads of a trainer
        datamodule = dm
        ckpt_path = None

    model._trainer = Trainer()  # type: ignore[assignment]
    model.setup("validate")
    torch.testing.assert_close(model.input_mean, torch.tensor(dm.mean, dtype=torch.float32))
    torch.testing.assert_close(model.input_std, torch.tensor(dm.std, dtype=torch.float32))
    assert model.input_size == dm.input_size == 16
