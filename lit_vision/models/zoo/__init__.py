"""The model zoo: the backbone interface, the registry and every registered family.

Importing a family module registers its backbones; ``lit_vision.models`` imports this package, so
``create_backbone("resnet18_cifar")`` works after ``import lit_vision.models``.
"""

from lit_vision.models.zoo import (  # noqa: F401  (importing a family registers it)
    airbench,
    cbam,
    cnn,
    compact,
    efficientnet,
    gapawarenet,
    resnet,
    transformer,
)
from lit_vision.models.zoo.backbone import Backbone
from lit_vision.models.zoo.registry import create_backbone, list_backbones, register_backbone

__all__ = ["Backbone", "create_backbone", "list_backbones", "register_backbone"]
