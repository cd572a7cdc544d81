"""Where things are: the checkout, its complete configs, and the real CIFAR-10 JPEGs."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: the real CIFAR-10 JPEGs (``train/<class>/*.jpg``): ``../shared`` beside the checkout, or
#: ``$LIT_VISION_CIFAR10_DIR``; the tests that use them say so loudly when they are missing (conftest.py)
REAL_CIFAR10 = Path(os.environ.get("LIT_VISION_CIFAR10_DIR", ROOT.parent / "shared/data/cifar10"))

#: the complete configs (a run each): the top level and the speedrun recipes, relative to the checkout
CONFIGS = sorted(
    p.relative_to(ROOT).as_posix()
    for pattern in ("*.yaml", "speedrun/*.yaml")
    for p in (ROOT / "configs").glob(pattern)
)
