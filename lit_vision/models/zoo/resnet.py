"""ResNets for 32x32 inputs (He et al., "Deep Residual Learning for Image Recognition", 2016).

The CIFAR variant replaces ImageNet's 7x7 stride-2 stem and max-pool with one 3x3 stride-1 conv, so a
32x32 image keeps its resolution through the first stage: 64x32x32 -> 128x16x16 -> 256x8x8 -> 512x4x4
(x4 channels for the bottleneck ResNet-50). Sizes for 10 classes: ``resnet_tiny`` (ResNet-10 at 5/8
width) 1.9M, ``resnet18_cifar`` 11,173,962, ``resnet34_cifar`` 21.3M, ``resnet50_cifar`` 23.5M.

Regularizers, off by default: stochastic depth (Huang et al., "Deep Networks with Stochastic Depth", 2016;
``drop_path_rate`` is the rate of the last block, earlier blocks scale linearly) and DropBlock (Ghiasi et
al., 2018; on the residual branches of stages 3 and 4, as in the paper). Both from ``torchvision.ops``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.ops import DropBlock2d, StochasticDepth

from lit_vision.models.zoo.backbone import Backbone
from lit_vision.models.zoo.layers import GlobalAvgPool2d, get_activation
from lit_vision.models.zoo.registry import register_variant

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "resnet18_cifar",
    "resnet34_cifar",
    "resnet50_cifar",
    "resnet_tiny",
]


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class _ResidualBlock(nn.Module):
    """A residual branch (built by the subclass) + DropBlock on its output, stochastic depth, the shortcut
    and the activation after the sum.

    Args:
        cin: input channels.
        width: branch width; the block outputs ``width * expansion`` channels.
        stride: spatial stride of the block (on the branch's 3x3 conv and the shortcut).
        act: activation name.
        drop_path: stochastic-depth probability of the branch (Huang et al., 2016), per sample.
        drop_block: DropBlock probability on the branch output (Ghiasi et al., 2018), 3x3 blocks.
    """

    expansion = 1

    def __init__(
        self,
        cin: int,
        width: int,
        stride: int = 1,
        act: str = "relu",
        drop_path: float = 0.0,
        drop_block: float = 0.0,
    ) -> None:
        super().__init__()
        act_layer = get_activation(act)
        cout = width * self.expansion
        self._build_branch(cin, width, cout, stride, act_layer)
        self.drop_block = DropBlock2d(drop_block, block_size=3) if drop_block > 0 else nn.Identity()
        self.drop_path = StochasticDepth(drop_path, "row")
        self.shortcut = _shortcut(cin, cout, stride)
        self.act_out = act_layer()

    def _build_branch(
        self, cin: int, width: int, cout: int, stride: int, act_layer: Callable[[], nn.Module]
    ) -> None:
        raise NotImplementedError

    def branch(self, x: Tensor) -> Tensor:
        """The residual branch up to its last BatchNorm."""
        raise NotImplementedError

    def last_bn(self) -> nn.BatchNorm2d:
        """The branch's last BatchNorm (zero-initialized: the block starts as the identity)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        out = self.drop_block(self.branch(x))
        return self.act_out(self.drop_path(out) + self.shortcut(x))


class BasicBlock(_ResidualBlock):
    """Two 3x3 convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def _build_branch(
        self, cin: int, width: int, cout: int, stride: int, act_layer: Callable[[], nn.Module]
    ) -> None:
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def branch(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(_ResidualBlock):
    """1x1 reduce -> 3x3 (carries the stride, "ResNet v1.5") -> 1x1 expand x4 (ResNet-50)."""

    expansion = 4

    def _build_branch(
        self, cin: int, width: int, cout: int, stride: int, act_layer: Callable[[], nn.Module]
    ) -> None:
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = act_layer()
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = act_layer()
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def branch(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


class CifarResNet(Backbone):
    """ResNet with a CIFAR stem.

    Args:
        layers: number of blocks per stage.
        num_classes: number of output logits.
        width: channels of the first stage (doubled at each later stage; x4 at the output of bottlenecks).
        block: ``basic`` (ResNet-18/34) or ``bottleneck`` (ResNet-50).
        act: activation name (``relu``, ``gelu``, ``silu``/``swish``, ``mish``, ``leaky_relu``).
        drop_rate: dropout probability before the linear head.
        drop_path_rate: stochastic-depth drop probability of the last block (linear from 0 over blocks).
        drop_block_rate: DropBlock drop probability in stages 3 and 4 (block size 3 on 8x8 and 4x4 maps).
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: int = 64,
        block: str = "basic",
        act: str = "relu",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_block_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        block_cls: type[BasicBlock | Bottleneck] = BasicBlock if block == "basic" else Bottleneck
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), get_activation(act)()
        )
        n_total, idx = sum(layers), 0
        stages, cin = [], width
        for i, n_blocks in enumerate(layers):
            blocks = []
            for j in range(n_blocks):
                blocks.append(
                    block_cls(
                        cin,
                        width * 2**i,
                        stride=2 if i > 0 and j == 0 else 1,
                        act=act,
                        drop_path=drop_path_rate * idx / max(1, n_total - 1),
                        drop_block=drop_block_rate if i >= 2 else 0.0,
                    )
                )
                cin = width * 2**i * block_cls.expansion
                idx += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.pool = GlobalAvgPool2d()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch: blocks start as the identity (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, _ResidualBlock):
                nn.init.zeros_(m.last_bn().weight)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))  # (N, num_features, H/8, W/8)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(features).flatten(1)
        return x if pre_logits else self.fc(self.drop(x))


resnet_tiny = register_variant(
    "resnet_tiny",
    CifarResNet,
    "ResNet-10 at 5/8 width (one basic block per stage, 40-320 channels; ~1.9M parameters).",
    layers=(1, 1, 1, 1),
    width=40,
)
resnet18_cifar = register_variant(
    "resnet18_cifar",
    CifarResNet,
    "ResNet-18 with a 3x3 stem and no max-pool (11,173,962 parameters).",
    layers=(2, 2, 2, 2),
)
resnet34_cifar = register_variant(
    "resnet34_cifar",
    CifarResNet,
    "ResNet-34 with a 3x3 stem and no max-pool (~21.3M parameters).",
    layers=(3, 4, 6, 3),
)
resnet50_cifar = register_variant(
    "resnet50_cifar",
    CifarResNet,
    "ResNet-50 (bottleneck blocks) with a 3x3 stem and no max-pool (~23.5M parameters).",
    layers=(3, 4, 6, 3),
    block="bottleneck",
)
