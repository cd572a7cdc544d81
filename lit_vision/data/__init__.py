"""Data: the ``CIFARDataModule``, its sources and batched transforms."""

from lit_vision.data.datamodule import CIFARDataModule
from lit_vision.data.sources import DatasetError
from lit_vision.data.transforms import BatchAugment

__all__ = ["BatchAugment", "CIFARDataModule", "DatasetError"]
