"""``cbam_resnet``: a CIFAR ResNet whose blocks carry CBAM attention.

CBAM (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018) refines a feature map twice:
channel attention from a shared MLP over the average- *and* max-pooled descriptors, then spatial attention
from a 7x7 conv over the channel-wise mean and max maps. It sits on the residual branch, before the add.

Layout (32x32 input)::

    stem      3x3 conv 3->31, BN, act                         31 x 32 x 32
    stage 1   2 x CBAM basic block, 31 ch                     31 x 32 x 32
    stage 2   2 x CBAM basic block, 124 ch, first stride 2    124 x 16 x 16
    stage 3   2 x CBAM basic block, 248 ch, first stride 2    248 x 8 x 8
    stage 4   2 x CBAM basic block, 248 ch, first stride 2    248 x 4 x 4
    extra     1x1 conv 248->248, BN, act                      248 x 4 x 4
    head      global average pool, dropout 0.3, Linear(248->num_classes)

The reference model has 4,913,705 parameters for 10 classes but its stage widths are not published; the
widths above (31-124-248-248, channel reduction 8) give 4,875,363, within 1% of it.
``torchvision.ops.SqueezeExcitation`` pools by average only, so the CBAM module is written here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from lit_vision.models.zoo.backbone import Backbone
from lit_vision.models.zoo.layers import GlobalAvgPool2d, conv_norm_act, get_activation
from lit_vision.models.zoo.registry import register_variant

__all__ = ["CBAM", "CBAMBlock", "CBAMResNet", "cbam_resnet"]


class CBAM(nn.Module):
    """Channel attention (avg + max pooled, shared MLP) followed by spatial attention (7x7 conv).

    Args:
        channels: channels of the refined feature map.
        reduction: hidden width of the channel MLP is ``channels // reduction``.
        spatial_kernel: kernel of the spatial-attention conv.
    """

    def __init__(self, channels: int, reduction: int = 8, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(  # 1x1 convs = a per-position Linear, applied to (N, C, 1, 1)
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)

    def channel_attention(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, 1, 1) weights in (0, 1)."""
        avg = self.mlp(x.mean((2, 3), keepdim=True))
        mx = self.mlp(x.amax((2, 3), keepdim=True))
        return torch.sigmoid(avg + mx)

    def spatial_attention(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 1, H, W) weights in (0, 1)."""
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)  # (N, 2, H, W)
        return torch.sigmoid(self.spatial(pooled))

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.channel_attention(x)
        return x * self.spatial_attention(x)


class CBAMBlock(nn.Module):
    """Basic residual block (two 3x3 conv-BN) with CBAM on the branch before the residual add."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int = 1,
        act: str = "relu",
        reduction: int = 8,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = conv_norm_act(cin, cout, 3, stride, act=act)
        self.conv2 = conv_norm_act(cout, cout, 3, act=None)
        self.cbam = CBAM(cout, reduction)
        self.drop_path = StochasticDepth(drop_path, "row")
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = get_activation(act)()

    def forward(self, x: Tensor) -> Tensor:
        out = self.cbam(self.conv2(self.conv1(x)))
        return self.act(self.drop_path(out) + self.shortcut(x))


class CBAMResNet(Backbone):
    """ResNet with CBAM blocks; see the module docstring for the layout.

    Args:
        num_classes: number of output logits.
        stem_width: channels of the 3x3 stem.
        widths: channels of the four stages (two blocks each; stages 2-4 start with stride 2).
        extra_width: output channels of the extra 1x1 conv before pooling.
        reduction: CBAM channel-MLP reduction.
        act: activation name (``relu``, ``gelu``, ``silu``/``swish``, ``mish``, ``leaky_relu``).
        drop_rate: dropout probability before the linear head.
        drop_path_rate: stochastic-depth rate of the last block (linear from 0).
    """

    def __init__(
        self,
        num_classes: int = 10,
        stem_width: int = 31,
        widths: tuple[int, int, int, int] = (31, 124, 248, 248),
        extra_width: int = 248,
        reduction: int = 8,
        act: str = "relu",
        drop_rate: float = 0.3,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = conv_norm_act(3, stem_width, 3, act=act)
        blocks: list[nn.Module] = []
        cin, n_total = stem_width, 2 * len(widths)
        for i, w in enumerate(widths):
            for j in range(2):
                idx = 2 * i + j
                stride = 2 if i > 0 and j == 0 else 1
                dp = drop_path_rate * idx / (n_total - 1)
                blocks.append(CBAMBlock(cin, w, stride, act, reduction, dp))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.extra = conv_norm_act(cin, extra_width, 1, act=act)
        self.num_features = extra_width
        self.pool = GlobalAvgPool2d()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(extra_width, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.extra(self.blocks(self.stem(x)))  # (N, 248, H/8, W/8)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(features).flatten(1)
        return x if pre_logits else self.fc(self.drop(x))


cbam_resnet = register_variant(
    "cbam_resnet", CBAMResNet, "Attention ResNet with CBAM blocks (4,875,363 parameters for 10 classes)."
)
