"""Models: the ``ImageClassifier`` LightningModule and the backbone registry."""

from lit_vision.models import compact, resnet  # noqa: F401  (register the zoo)
from lit_vision.models.backbone import Backbone
from lit_vision.models.classifier import ImageClassifier
from lit_vision.models.losses import SoftTargetCrossEntropy
from lit_vision.models.registry import create_backbone, is_backbone, list_backbones, register_backbone
from lit_vision.models.schedulers import WarmupCosineLR

__all__ = [
    "Backbone",
    "ImageClassifier",
    "SoftTargetCrossEntropy",
    "WarmupCosineLR",
    "create_backbone",
    "is_backbone",
    "list_backbones",
    "register_backbone",
]
