"""Small generated image datasets: learnable, deterministic, on disk in the layouts the datamodule reads.

For tests, benchmarks (``--synthetic``) and trying the CLI without downloading anything::

    from lit_vision.data.synthetic import make_imagefolder
    make_imagefolder(Path("data/toy"), classes=3, n_train=100, n_test=20)
    # python train.py fit --data.dataset imagefolder --data.data_dir data/toy
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["class_image", "make_imagefolder"]


def class_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A learnable image: class-specific colour in one quadrant-shaped region, plus noise. (H, W, 3) uint8."""
    img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
    color = np.array([(37 * label) % 256, (91 * label + 60) % 256, (53 * label + 120) % 256], dtype=np.uint8)
    q = size // 2
    y0, x0 = (label % 2) * q, ((label // 2) % 2) * q
    img[y0 : y0 + q, x0 : x0 + q] = color
    return img


def make_imagefolder(
    root: Path,
    classes: list[str] | int = 3,
    n_train: int = 12,
    n_test: int | None = 4,
    size: int = 32,
    ext: str = ".png",
    seed: int = 0,
) -> Path:
    """Write ``root/train/<class>/<i><ext>`` (and ``root/test/...`` if ``n_test``); return ``root``."""
    names = [f"class_{i:02d}" for i in range(classes)] if isinstance(classes, int) else classes
    rng = np.random.default_rng(seed)
    splits = {"train": n_train} | ({"test": n_test} if n_test else {})
    for split, n in splits.items():
        for label, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(class_image(label, rng, size)).save(folder / f"{i:04d}{ext}")
    return root
