from __future__ import annotations

import pytest
import torch

from lit_vision.models import create_backbone, list_backbones, register_backbone
from lit_vision.models.inspection.profiling import count_params
from lit_vision.models.zoo.registry import _BACKBONES


def test_compact_design() -> None:
    model = create_backbone("compact_cifar", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(c.stride == (2, 2) for c in convs) == 3
    assert all(c.kernel_size in ((3, 3), (1, 1)) for c in convs)
    assert sum(c.dilation == (2, 2) for c in convs) == 1
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape == (1, 128, 4, 4)
    assert count_params(create_backbone("compact_cifar", num_classes=10, width=1.5)) < 200_000


def test_unknown_backbone_lists_close_names() -> None:
    with pytest.raises(ValueError, match="Did you mean: compact_cifar") as err:
        create_backbone("compact_cifr", num_classes=10)
    assert "resnet18_cifar" in str(err.value)


def test_list_backbones_pattern() -> None:
    assert list_backbones("resnet*") == ["resnet18_cifar", "resnet34_cifar", "resnet50_cifar", "resnet_tiny"]
    assert list_backbones("*transformer*") == ["cnn_transformer_base", "cnn_transformer_small"]
    assert list_backbones("nothing*") == []


def test_variants_set_defaults_that_stay_overridable() -> None:
    """register_variant: the variant's architecture arguments are defaults; any other is passed through."""
    tiny = create_backbone("resnet_tiny", num_classes=10)
    assert [len(stage) for stage in tiny.stages] == [1, 1, 1, 1] and tiny.num_features == 8 * 40
    narrow = create_backbone("resnet18_cifar", num_classes=10, width=32)
    assert [len(stage) for stage in narrow.stages] == [2, 2, 2, 2] and narrow.num_features == 8 * 32
    assert count_params(narrow) < count_params(create_backbone("resnet18_cifar", num_classes=10))
    assert len(create_backbone("vit_tiny", num_classes=10, depth=2).blocks) == 2
    assert _BACKBONES["resnet50_cifar"].__doc__.startswith("ResNet-50")
    with pytest.raises(TypeError, match="unexpected keyword argument 'widht'"):
        create_backbone("resnet18_cifar", num_classes=10, widht=32)


def test_register_backbone_rejects_duplicates() -> None:
    @register_backbone(name="_test_tiny")
    def tiny(num_classes: int = 10) -> torch.nn.Module:
        return torch.nn.Linear(3, num_classes)

    try:
        assert "_test_tiny" in list_backbones()
        assert isinstance(create_backbone("_test_tiny", num_classes=4), torch.nn.Linear)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone(lambda num_classes: None, name="_test_tiny")
    finally:
        _BACKBONES.pop("_test_tiny")


def test_torchvision_backbone() -> None:
    model = create_backbone("torchvision/resnet18", num_classes=7)
    assert model.num_features == 512
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="resnet18"):
        create_backbone("torchvision/resnet181", num_classes=7)


def test_timm_backbone() -> None:
    pytest.importorskip("timm")
    model = create_backbone("timm/resnet18", num_classes=5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert model.num_features == 512
    with pytest.raises(ValueError, match="Unknown timm model"):
        create_backbone("timm/resnet18zz", num_classes=5)
