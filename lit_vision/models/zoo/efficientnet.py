"""EfficientNets for 32x32 inputs (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019).

MBConv blocks (Sandler et al., "MobileNetV2", 2018): 1x1 expansion, depthwise k x k conv, squeeze-and-
excitation (Hu et al., 2018), 1x1 projection, residual with stochastic depth when shapes match. Width and
depth multipliers scale the B0 table below exactly as the paper does (channels rounded to multiples of 8,
repeats rounded up).

For CIFAR the stem is stride 1 and stage 2 keeps stride 1, so a 32x32 image is downsampled three times
(32 -> 16 -> 8 -> 4) instead of five; the ImageNet design would leave a 1x1 map. Sizes for 10 classes:
``efficientnet_tiny`` (width 0.5) 1.1M, ``efficientnet_b0`` 4.0M, ``efficientnet_b1`` (depth
1.1) 6.5M. ``SqueezeExcitation``, ``StochasticDepth`` and ``Conv2dNormActivation`` come from torchvision.ops.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torchvision.ops import SqueezeExcitation, StochasticDepth

from lit_vision.models.zoo.backbone import Backbone
from lit_vision.models.zoo.layers import GlobalAvgPool2d, conv_norm_act, get_activation
from lit_vision.models.zoo.registry import register_variant

__all__ = ["CifarEfficientNet", "MBConv", "efficientnet_b0", "efficientnet_b1", "efficientnet_tiny"]

# B0 stages: (expansion, kernel, stride, out channels, repeats). Strides adapted to 32x32 (see above).
B0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 1, 24, 2),  # stride 2 on ImageNet
    (6, 5, 2, 40, 2),  # 32 -> 16
    (6, 3, 2, 80, 3),  # 16 -> 8
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),  # 8 -> 4
    (6, 3, 1, 320, 1),
)


def _round_channels(c: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, never more than 10% below ``c`` (the paper's rule)."""
    rounded = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * c else rounded


class MBConv(nn.Module):
    """Inverted residual block with squeeze-and-excitation.

    Args:
        cin: input channels.
        cout: output channels.
        expansion: hidden channels = ``cin * expansion``.
        kernel_size: depthwise kernel.
        stride: depthwise stride.
        act: activation name.
        se_ratio: squeeze width relative to ``cin`` (0.25 in the paper).
        drop_path: stochastic-depth probability of the residual branch.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        expansion: int,
        kernel_size: int,
        stride: int,
        act: str = "silu",
        se_ratio: float = 0.25,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_norm_act(cin, hidden, 1, act=act))
        se = SqueezeExcitation(hidden, max(1, int(cin * se_ratio)), activation=get_activation(act))
        se.avgpool = GlobalAvgPool2d()  # torchvision's adaptive pooling has no deterministic CUDA backward
        layers += [
            conv_norm_act(hidden, hidden, kernel_size, stride, groups=hidden, act=act),
            se,
            conv_norm_act(hidden, cout, 1, act=None),  # linear bottleneck: no activation
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + self.drop_path(out) if self.use_residual else out


class CifarEfficientNet(Backbone):
    """EfficientNet scaled from the B0 table.

    Args:
        num_classes: number of output logits.
        width_mult: channel multiplier.
        depth_mult: repeat multiplier (rounded up per stage).
        act: activation name (SiLU/swish in the paper).
        drop_rate: dropout probability before the linear head.
        drop_path_rate: stochastic-depth probability of the last block (linear from 0 over blocks).
    """

    def __init__(
        self,
        num_classes: int = 10,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        act: str = "silu",
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        stem = _round_channels(32 * width_mult)
        self.stem = conv_norm_act(3, stem, 3, 1, act=act)
        stages = [
            (e, k, s, _round_channels(c * width_mult), math.ceil(n * depth_mult))
            for e, k, s, c, n in B0_STAGES
        ]
        n_total, idx = sum(n for *_, n in stages), 0
        blocks: list[nn.Module] = []
        cin = stem
        for e, k, s, c, n in stages:
            for j in range(n):
                dp = drop_path_rate * idx / max(1, n_total - 1)
                blocks.append(MBConv(cin, c, e, k, s if j == 0 else 1, act, drop_path=dp))
                cin, idx = c, idx + 1
        self.blocks = nn.Sequential(*blocks)
        self.num_features = 4 * cin  # 1280 for B0/B1
        self.head_conv = conv_norm_act(cin, self.num_features, 1, act=act)
        self.pool = GlobalAvgPool2d()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.head_conv(self.blocks(self.stem(x)))  # (N, num_features, H/8, W/8)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(features).flatten(1)
        return x if pre_logits else self.fc(self.drop(x))


efficientnet_tiny = register_variant(
    "efficientnet_tiny",
    CifarEfficientNet,
    "EfficientNet-B0 at half width (~1.1M parameters).",
    width_mult=0.5,
)
efficientnet_b0 = register_variant(
    "efficientnet_b0", CifarEfficientNet, "EfficientNet-B0 for 32x32 inputs (~4.0M parameters)."
)
efficientnet_b1 = register_variant(
    "efficientnet_b1",
    CifarEfficientNet,
    "EfficientNet-B1 (depth 1.1) for 32x32 inputs (~6.5M parameters).",
    depth_mult=1.1,
)
