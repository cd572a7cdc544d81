"""A compact CIFAR CNN (84,322 parameters at ``width=1``).

Design, following the seed recipe (3x3 convs, BN+ReLU after every conv, no max-pooling):

=========  ==============================  ===========  ==============
block      layers                          stride       out (32x32 in)
=========  ==============================  ===========  ==============
1          C(3->24) C(24->32) C(32->48)    1, 1, 2      48 x 16 x 16
2          DW(48->64) DW(64->80)           1, 2         80 x 8 x 8
3          1x1(80->96) DW(96->112)         1, 2         112 x 4 x 4
4          DW(112->128, dilation 2)        1            128 x 4 x 4
           1x1(128->128)                   1            128 x 4 x 4
head       global average pool, Linear(128->num_classes)
=========  ==============================  ===========  ==============

``C`` is a full 3x3 conv, ``DW`` a depthwise-separable conv (3x3 depthwise, 1x1 pointwise, then BN+ReLU:
the pair counts as one conv of the design), ``1x1`` a pointwise conv. Exactly three stride-2 downsamplings;
the dilated conv in the last block widens the receptive field without a fourth downsampling.
Depthwise-separable convs: Howard et al., "MobileNets", 2017. Dilation: Yu & Koltun, 2016.
"""

from __future__ import annotations

from torch import Tensor, nn

from lit_vision.models.zoo.backbone import Backbone
from lit_vision.models.zoo.layers import GlobalAvgPool2d
from lit_vision.models.zoo.registry import register_backbone

__all__ = ["CompactCNN", "compact_cifar"]


class ConvBNReLU(nn.Sequential):
    """k x k conv (no bias: BN follows) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """3x3 depthwise conv -> 1x1 pointwise conv -> BatchNorm -> ReLU.

    No BN between depthwise and pointwise: the pair is one linear map, normalised once (the reference
    parameter count, 84,322, depends on this).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride, padding=dilation, dilation=dilation, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class CompactCNN(Backbone):
    """The compact CIFAR CNN; see the module docstring for the layer table.

    Args:
        num_classes: number of output logits.
        width: channel multiplier (1.0 = the 84,322-parameter reference; 1.5 stays under 200k).
        drop_rate: dropout probability before the linear head.
    """

    def __init__(self, num_classes: int = 10, width: float = 1.0, drop_rate: float = 0.0) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")

        def ch(c: int) -> int:
            return max(1, round(c * width))

        self.stem = nn.Sequential(  # 3 x 32 x 32 -> 48 x 16 x 16
            ConvBNReLU(3, ch(24)),
            ConvBNReLU(ch(24), ch(32)),
            ConvBNReLU(ch(32), ch(48), stride=2),
        )
        self.stage2 = nn.Sequential(  # -> 80 x 8 x 8
            SeparableConvBNReLU(ch(48), ch(64)),
            SeparableConvBNReLU(ch(64), ch(80), stride=2),
        )
        self.stage3 = nn.Sequential(  # -> 112 x 4 x 4
            ConvBNReLU(ch(80), ch(96), kernel_size=1),
            SeparableConvBNReLU(ch(96), ch(112), stride=2),
        )
        self.stage4 = nn.Sequential(  # -> 128 x 4 x 4; dilation 2 sees the whole 4x4 map
            SeparableConvBNReLU(ch(112), ch(128), dilation=2),
            ConvBNReLU(ch(128), ch(128), kernel_size=1),
        )
        self.num_features = ch(128)
        self.pool = GlobalAvgPool2d()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stage4(self.stage3(self.stage2(self.stem(x))))  # (N, 128, H/8, W/8)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(features).flatten(1)  # (N, num_features)
        return x if pre_logits else self.fc(self.drop(x))


@register_backbone
def compact_cifar(num_classes: int = 10, width: float = 1.0, drop_rate: float = 0.0) -> CompactCNN:
    """Compact CIFAR CNN, 84,322 parameters at ``width=1`` and 10 classes."""
    return CompactCNN(num_classes=num_classes, width=width, drop_rate=drop_rate)
