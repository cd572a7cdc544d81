"""Models: the ``ImageClassifier`` LightningModule, the backbone registry and the model zoo.

``python -m lit_vision.models list`` prints every registered backbone with its size and cost.
"""

# Importing a family module registers its backbones.
from lit_vision.models import (  # noqa: F401
    airbench,
    cbam,
    cnn,
    compact,
    efficientnet,
    gapawarenet,
    resnet,
    transformer,
)
from lit_vision.models.backbone import Backbone
from lit_vision.models.classifier import ImageClassifier, ScheduleChangeError
from lit_vision.models.losses import SoftTargetCrossEntropy
from lit_vision.models.optimizers import DecoupledSGD
from lit_vision.models.registry import create_backbone, list_backbones, register_backbone
from lit_vision.models.schedulers import TriangleLR, WarmupCosineLR

__all__ = [
    "Backbone",
    "DecoupledSGD",
    "ImageClassifier",
    "ScheduleChangeError",
    "SoftTargetCrossEntropy",
    "TriangleLR",
    "WarmupCosineLR",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
