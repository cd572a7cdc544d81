"""Data: the ``ImageDataModule`` (CIFAR-10/100 or any ImageFolder tree), its sources and transforms."""

from lit_vision.data.datamodule import ImageDataModule
from lit_vision.data.sources import DatasetError
from lit_vision.data.transforms import BatchAugment

__all__ = ["BatchAugment", "DatasetError", "ImageDataModule"]
