"""ResNets for 32x32 inputs (He et al., "Deep Residual Learning for Image Recognition", 2016).

The CIFAR variant replaces ImageNet's 7x7 stride-2 stem and max-pool with one 3x3 stride-1 conv, so a
32x32 image keeps its resolution through the first stage: 64x32x32 -> 128x16x16 -> 256x8x8 -> 512x4x4.
``resnet18_cifar`` has 11,173,962 parameters for 10 classes. The torchvision ``BasicBlock`` is reused.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from lit_vision.models.backbone import Backbone
from lit_vision.models.registry import register_backbone

__all__ = ["CifarResNet", "resnet18_cifar"]


class CifarResNet(Backbone):
    """ResNet with a CIFAR stem.

    Args:
        layers: number of ``BasicBlock`` per stage.
        num_classes: number of output logits.
        width: channels of the first stage (doubled at each later stage).
        drop_rate: dropout probability before the linear head.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: int = 64,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages = []
        cin = width
        for i, n_blocks in enumerate(layers):
            cout = width * 2**i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                s = stride if j == 0 else 1
                downsample = None
                if s != 1 or cin != cout:
                    downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, s, bias=False), nn.BatchNorm2d(cout))
                blocks.append(BasicBlock(cin, cout, stride=s, downsample=downsample))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch: blocks start as the identity (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))  # (N, 8 * width, H/8, W/8)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(features).flatten(1)
        return x if pre_logits else self.fc(self.drop(x))


@register_backbone
def resnet18_cifar(num_classes: int = 10, width: int = 64, drop_rate: float = 0.0) -> CifarResNet:
    """ResNet-18 with a 3x3 stem and no max-pool (~11.2M parameters)."""
    return CifarResNet((2, 2, 2, 2), num_classes=num_classes, width=width, drop_rate=drop_rate)
