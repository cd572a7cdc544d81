"""Adapters giving torchvision and timm models the backbone interface."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_vision.errors import ConfigError
from lit_vision.models.zoo.backbone import Backbone

__all__ = ["TorchvisionBackbone", "create_timm_backbone", "create_torchvision_backbone"]


def _replace_head(model: nn.Module) -> tuple[nn.Module, int]:
    """Swap the last ``nn.Linear`` of a torchvision classifier for ``nn.Identity``; return model and width."""
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return model, head.in_features
        if isinstance(head, nn.Sequential):
            # e.g. classifier = Sequential(Dropout, Linear) in MobileNet/EfficientNet, heads.head in ViT.
            for idx in reversed(range(len(head))):
                if isinstance(head[idx], nn.Linear):
                    in_features = head[idx].in_features
                    head[idx] = nn.Identity()
                    return model, in_features
    raise ValueError(
        f"Cannot find the linear classifier of {type(model).__name__}; "
        "pass the model as an nn.Module via class_path instead."
    )


class TorchvisionBackbone(Backbone):
    """A torchvision classifier whose final linear layer is this module's head.

    ``forward_features`` returns the pooled pre-logit vector (N, num_features): torchvision models do not
    expose their last feature map in a uniform way.
    """

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.body, self.num_features = _replace_head(model)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        return features if pre_logits else self.fc(features)


def create_torchvision_backbone(
    name: str, num_classes: int, pretrained: bool = False, **kwargs: Any
) -> TorchvisionBackbone:
    """Build ``torchvision.models.<name>`` with a fresh ``num_classes`` head.

    Args:
        name: a name from ``torchvision.models.list_models(module=torchvision.models)``.
        num_classes: number of output logits.
        pretrained: load the default ImageNet weights (needs network access or a filled torch hub cache).
        **kwargs: passed to the model builder.
    """
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available, n=5)
        raise ConfigError(
            f"Unknown torchvision model {name!r} (--model.backbone torchvision/<name>). "
            f"Closest: {', '.join(close) or 'none'}."
        )
    weights = "DEFAULT" if pretrained else None
    try:
        model = torchvision.models.get_model(name, weights=weights, **kwargs)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        if not pretrained:
            raise
        raise RuntimeError(
            f"Could not download pretrained weights for torchvision/{name} ({err}). "
            "Set pretrained: false, or place the weights in the torch hub cache ($TORCH_HOME)."
        ) from err
    return TorchvisionBackbone(model, num_classes)


def create_timm_backbone(name: str, num_classes: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build ``timm.create_model(name)``; timm models implement the backbone interface natively."""
    try:
        import timm
    except ImportError as err:
        raise ImportError("timm backbones need the timm extra: pip install 'lit-vision[timm]'") from err
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
            raise ConfigError(
                f"Unknown timm model {name!r} (--model.backbone timm/<name>). "
                f"Similar: {', '.join(close) or 'none'}."
            ) from err
        raise
    except OSError as err:
        raise RuntimeError(
            f"Could not download pretrained weights for timm/{name} ({err}). "
            "Set pretrained: false, or pre-fill the Hugging Face cache."
        ) from err
