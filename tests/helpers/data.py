"""Generated datasets on disk: ImageFolder trees (lit_vision's generator) and torchvision's CIFAR-10 files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from lit_vision.data.cifar_classes import CIFAR10_CLASSES
from lit_vision.data.synthetic import class_image, make_imagefolder

__all__ = ["class_image", "make_imagefolder", "make_torchvision_cifar10"]


def make_torchvision_cifar10(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Write files in torchvision's ``cifar-10-batches-py`` format (random pixels, labels cycling 0..9)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int, offset: int) -> dict:
        labels = [(offset + i) % 10 for i in range(n)]
        data = np.stack([class_image(lab, rng).transpose(2, 0, 1).reshape(-1) for lab in labels])
        return {"data": data, "labels": labels}

    per = n_train // 5
    for i in range(5):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(batch(per, i * per), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test, 0), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES}, f)
    return root
