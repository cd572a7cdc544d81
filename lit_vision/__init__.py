"""lit_vision: image classification on CIFAR-10/100 and image folders with PyTorch Lightning."""

from lit_vision.data import ImageDataModule
from lit_vision.models import ImageClassifier, create_backbone, list_backbones, register_backbone

__version__ = "0.1.0"
__all__ = ["ImageClassifier", "ImageDataModule", "create_backbone", "list_backbones", "register_backbone"]
