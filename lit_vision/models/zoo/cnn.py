"""``cnn``: the plain baseline, a VGG-style stack (Simonyan & Zisserman, "Very Deep ConvNets", 2015).

Three stages of two 3x3 conv-BN-act layers, each stage ending in a 2x2 max-pool, then global average
pooling and a linear head: 3x32x32 -> 64x16x16 -> 128x8x8 -> 256x4x4. About 1.15M parameters. No residuals,
no attention: the reference point every other backbone should beat.
"""

from __future__ import annotations

from torch import Tensor, nn

from lit_vision.models.zoo.backbone import Backbone
from lit_vision.models.zoo.layers import GlobalAvgPool2d, conv_norm_act
from lit_vision.models.zoo.registry import register_backbone

__all__ = ["PlainCNN", "cnn"]


class PlainCNN(Backbone):
    """VGG-style baseline.

    Args:
        num_classes: number of output logits.
        widths: channels of each stage (two convs per stage, a 2x2 max-pool after each).
        act: activation name (``relu``, ``gelu``, ``silu``/``swish``, ``mish``, ``leaky_relu``).
        drop_rate: dropout probability before the linear head.
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, ...] = (64, 128, 256),
        act: str = "relu",
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += [conv_norm_act(cin, w, act=act), conv_norm_act(w, w, act=act), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.pool = GlobalAvgPool2d()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)  # (N, widths[-1], H / 2**len(widths), W / 2**len(widths))

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(features).flatten(1)
        return x if pre_logits else self.fc(self.drop(x))


@register_backbone
def cnn(num_classes: int = 10, act: str = "relu", drop_rate: float = 0.2) -> PlainCNN:
    """VGG-style baseline, ~1.15M parameters."""
    return PlainCNN(num_classes=num_classes, act=act, drop_rate=drop_rate)
