"""Models, by concern: the zoo (``zoo``: backbones and their registry), the training module and its parts
(``training``: ``ImageClassifier``), checkpoint files (``checkpoint_io``), inference outside a Trainer
(``inference``) and inspection (``inspection``).

``python -m lit_vision.models list`` prints every registered backbone with its size and cost.
"""

from lit_vision.models.training.classifier import ImageClassifier, ScheduleChangeError
from lit_vision.models.training.losses import SoftTargetCrossEntropy
from lit_vision.models.training.optimizers import DecoupledSGD
from lit_vision.models.training.schedulers import TriangleLR, WarmupCosineLR
from lit_vision.models.zoo import Backbone, create_backbone, list_backbones, register_backbone

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
