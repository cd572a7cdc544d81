from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")  # deprecations inside LightningCLI

sys.path.insert(0, str(Path(__file__).parent))

from helpers import make_imagefolder

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own decode cache: no test reads another's (or the user's) cached tensors."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LIT_VISION_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes, 20 train + 6 test PNG images each, 32x32."""
    return make_imagefolder(tmp_path_factory.mktemp("tiny") / "data", 3, n_train=20, n_test=6)


@pytest.fixture(scope="session")
def tiny_cifar10_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder copy of 'CIFAR-10': its 10 class names, 8 train + 3 test JPEGs each."""
    return make_imagefolder(tmp_path_factory.mktemp("c10") / "data", CIFAR10_CLASSES, 8, 3, ext=".jpg")


@pytest.fixture(scope="session")
def tiny_cifar100_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder copy of 'CIFAR-100': 100 classes, 3 train + 1 test image each."""
    from lit_vision.data.cifar100_classes import CIFAR100_CLASSES

    return make_imagefolder(tmp_path_factory.mktemp("c100") / "data", CIFAR100_CLASSES, 3, 1)
