"""``gapawarenet``: a ConvNeXt-style CIFAR network built to be looked into (CAMs, segmentation).

Pieces and where they come from:

* Spatial Transformer Network at the input (Jaderberg et al., NeurIPS 2015): a small localisation net
  predicts an affine transform, initialised to the identity, and the image is resampled with it.
* CoordConv stem (Liu et al., NeurIPS 2018): two channels holding the x and y coordinates in [-1, 1] are
  appended to the image before the first 3x3 conv, so filters can know where they are.
* Four stages of ConvNeXt blocks (Liu et al., "A ConvNet for the 2020s", CVPR 2022): 7x7 depthwise conv,
  LayerNorm, inverted MLP (x4), layer scale, stochastic depth; with squeeze-and-excitation (Hu et al., 2018)
  on the MLP output. ``dilated=True`` dilates the depthwise convs of stages 3 and 4 by 2.
* Lightweight multi-head self-attention after the blocks of stages 2 and 3: keys and values are average
  pooled to at most 8x8 (spatial-reduction attention, Wang et al., "PVT", ICCV 2021), so the cost grows
  linearly, not quadratically, with the number of pixels.
* Anti-aliased downsampling between stages (Zhang, "Making CNNs Shift-Invariant Again", ICML 2019):
  LayerNorm, binomial BlurPool with stride 2, 1x1 conv to the next width.
* ``skip_connections=True``: the outputs of stages 1-3 are average pooled to the last map's size, projected
  by 1x1 convs and added to it, so the head sees every scale.
* Head: global average pooling and a 1x1-conv classifier. Because pooling and the head are both linear,
  the class activation map (Zhou et al., "Learning Deep Features for Discriminative Localization", 2016),
  ``lit_vision.explain.class_activation_map``, averages exactly to the logit.
* ``seg_head=True`` adds :meth:`GapAwareNet.forward_segmentation`: per-pixel logits at input resolution
  from the last map and stage 1 (a two-level FPN-style fusion, bilinear upsampling).

Resolution for a 32x32 input: stem and stage 1 32x32, stage 2 16x16, stage 3 8x8, stage 4 4x4. Any input
of at least 32x32 works (every pooling is adaptive; attention keys are pooled to a fixed size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.convnext import LayerNorm2d
from torchvision.ops import SqueezeExcitation, StochasticDepth

from lit_vision.models.zoo.backbone import Backbone
from lit_vision.models.zoo.layers import BlurPool2d, GlobalAvgPool2d, conv_norm_act, get_activation
from lit_vision.models.zoo.registry import register_variant

__all__ = [
    "ConvNeXtBlock",
    "CoordConvStem",
    "GapAwareNet",
    "PooledSelfAttention",
    "SpatialTransformer",
    "gapawarenet",
]

#: Widths and depths of the four stages per size.
GAPAWARE_SIZES: dict[str, tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = {
    "tiny": ((32, 64, 128, 256), (1, 1, 2, 1)),
    "small": ((48, 96, 192, 384), (2, 2, 4, 2)),
    "base": ((64, 128, 256, 512), (2, 2, 6, 2)),
}


class SpatialTransformer(nn.Module):
    """Learned affine warp of the input, starting as the identity.

    The localisation net (two conv-pool-ReLU layers, adaptive pooling to 4x4, a 2-layer MLP) outputs the
    2x3 matrix ``theta``; its last layer is zero with an identity bias, so an untrained STN returns its
    input unchanged.
    """

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.loc = nn.Sequential(
            nn.Conv2d(3, 8, 7, padding=3),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 5, padding=2),
            nn.MaxPool2d(2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, hidden),
            nn.ReLU(inplace=True),
        )
        self.theta = nn.Linear(hidden, 6)
        nn.init.zeros_(self.theta.weight)
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def transform(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, 2, 3) affine matrices in normalized coordinates."""
        return self.theta(self.loc(x)).view(-1, 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        theta = self.transform(x).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Border padding: a shifted image repeats its edge instead of sliding in black.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class CoordConvStem(nn.Module):
    """Append (x, y) coordinate channels in [-1, 1], then 3x3 conv-BN-act (3 + 2 -> ``cout`` channels)."""

    def __init__(self, cout: int, act: str = "gelu") -> None:
        super().__init__()
        self.conv = conv_norm_act(5, cout, 3, act=act)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return self.conv(torch.cat([x, xs, ys], dim=1))  # (N, cout, H, W)


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv -> LayerNorm -> 1x1 (x4) -> act -> 1x1 -> SE -> layer scale -> + residual.

    Args:
        dim: channels.
        act: activation name of the inverted MLP (GELU in ConvNeXt).
        drop_path: stochastic-depth probability of the residual branch.
        dilation: dilation of the depthwise conv.
        layer_scale: initial value of the per-channel residual scale (1e-6 in ConvNeXt).
    """

    def __init__(
        self,
        dim: int,
        act: str = "gelu",
        drop_path: float = 0.0,
        dilation: int = 1,
        layer_scale: float = 1e-6,
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3 * dilation, dilation=dilation, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pw1 = nn.Conv2d(dim, 4 * dim, 1)
        self.act = get_activation(act)()
        self.pw2 = nn.Conv2d(4 * dim, dim, 1)
        self.se = SqueezeExcitation(dim, max(8, dim // 4), activation=get_activation(act))
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        out = self.se(self.pw2(self.act(self.pw1(self.norm(self.dwconv(x))))))
        return x + self.drop_path(self.gamma * out)


class PooledSelfAttention(nn.Module):
    """Multi-head self-attention over pixels with keys/values average pooled to ``kv_size`` x ``kv_size``.

    Pre-norm residual block with layer scale: ``x + gamma * proj(attention(LN(x)))``. Every pixel is a query,
    so the output keeps the input's resolution.

    Args:
        dim: channels (divisible by ``heads``).
        heads: attention heads.
        kv_size: side of the pooled key/value grid.
        drop_path: stochastic-depth probability.
        layer_scale: initial residual scale.
    """

    def __init__(
        self, dim: int, heads: int, kv_size: int = 8, drop_path: float = 0.0, layer_scale: float = 1e-6
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.kv_size = heads, kv_size
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.q = nn.Conv2d(dim, dim, 1)
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        d = c // self.heads
        y = self.norm(x)
        q = self.q(y).reshape(n, self.heads, d, h * w).transpose(-1, -2)  # (N, heads, HW, d)
        pooled = F.adaptive_avg_pool2d(y, (min(h, self.kv_size), min(w, self.kv_size)))
        k, v = (
            self.kv(pooled).reshape(n, 2, self.heads, d, -1).transpose(-1, -2).unbind(1)
        )  # (N, heads, L, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, HW, d)
        out = self.proj(out.transpose(-1, -2).reshape(n, c, h, w))
        return x + self.drop_path(self.gamma * out)


class _Downsample(nn.Sequential):
    """LayerNorm -> BlurPool (binomial 3x3, stride 2) -> 1x1 conv: anti-aliased, halves H and W."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(LayerNorm2d(cin, eps=1e-6), BlurPool2d(cin, 3, stride=2), nn.Conv2d(cin, cout, 1))


class GapAwareNet(Backbone):
    """See the module docstring.

    Args:
        num_classes: number of output logits.
        size: ``tiny`` (32-256 channels), ``small`` (48-384) or ``base`` (64-512).
        act: activation name (``gelu`` default; ``relu``, ``silu``/``swish``, ``mish``, ``leaky_relu``).
        stn: put the spatial transformer in front.
        attention_heads: heads of the self-attention in stages 2 and 3 (0 disables attention).
        dilated: dilate the depthwise convs of stages 3 and 4 by 2.
        skip_connections: add pooled, projected stage 1-3 outputs to the last feature map.
        seg_head: build the segmentation head (:meth:`forward_segmentation`).
        drop_rate: dropout probability before the classifier.
        drop_path_rate: stochastic-depth probability of the last block (linear from 0).
        layer_scale: initial residual scale of blocks and attention.
    """

    classifier_attr = "head"

    def __init__(
        self,
        num_classes: int = 10,
        size: str = "tiny",
        act: str = "gelu",
        stn: bool = True,
        attention_heads: int = 4,
        dilated: bool = False,
        skip_connections: bool = False,
        seg_head: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        layer_scale: float = 1e-6,
    ) -> None:
        super().__init__()
        if size not in GAPAWARE_SIZES:
            raise ValueError(f"size must be one of {', '.join(GAPAWARE_SIZES)}, got {size!r}")
        dims, depths = GAPAWARE_SIZES[size]
        self.stn = SpatialTransformer() if stn else None
        self.stem = CoordConvStem(dims[0], act)
        n_total, idx = sum(depths), 0
        self.downsamples = nn.ModuleList(
            [nn.Identity()] + [_Downsample(dims[i - 1], dims[i]) for i in range(1, 4)]
        )
        self.stages = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            blocks: list[nn.Module] = []
            for _ in range(depth):
                dp = drop_path_rate * idx / max(1, n_total - 1)
                dilation = 2 if dilated and i >= 2 else 1
                blocks.append(ConvNeXtBlock(dim, act, dp, dilation, layer_scale))
                idx += 1
            if attention_heads and i in (1, 2):
                blocks.append(
                    PooledSelfAttention(dim, attention_heads, drop_path=dp, layer_scale=layer_scale)
                )
            self.stages.append(nn.Sequential(*blocks))
        self.skips = (
            nn.ModuleList([nn.Conv2d(d, dims[-1], 1, bias=False) for d in dims[:-1]])
            if skip_connections
            else None
        )
        self.norm = LayerNorm2d(dims[-1], eps=1e-6)
        self.num_features = dims[-1]
        self.pool = GlobalAvgPool2d()
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Conv2d(dims[-1], num_classes, 1)  # 1x1-conv classifier on the pooled (N, C, 1, 1) map
        if seg_head:
            self.seg_deep = nn.Conv2d(dims[-1], num_classes, 1)
            self.seg_shallow = nn.Conv2d(dims[0], num_classes, 1)
        else:
            self.seg_deep = self.seg_shallow = None

    def _stage_outputs(self, x: Tensor) -> list[Tensor]:
        if self.stn is not None:
            x = self.stn(x)
        x = self.stem(x)
        outs = []
        for down, stage in zip(self.downsamples, self.stages, strict=True):
            x = stage(down(x))
            outs.append(x)
        return outs  # 4 maps: (N, dims[i], H / 2**i, W / 2**i)

    def _fuse(self, outs: list[Tensor]) -> Tensor:
        last = outs[-1]
        if self.skips is not None:
            for skip, out in zip(self.skips, outs[:-1], strict=True):
                last = last + skip(F.adaptive_avg_pool2d(out, last.shape[-2:]))
        return self.norm(last)

    def forward_features(self, x: Tensor) -> Tensor:
        return self._fuse(self._stage_outputs(x))  # (N, num_features, H/8, W/8)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = self.pool(features)  # (N, C, 1, 1)
        return pooled.flatten(1) if pre_logits else self.head(self.drop(pooled)).flatten(1)

    def forward_segmentation(self, x: Tensor) -> Tensor:
        """Per-pixel logits (N, num_classes, H, W) at the input's resolution (needs ``seg_head=True``)."""
        if self.seg_deep is None or self.seg_shallow is None:
            raise RuntimeError("This GapAwareNet was built without a segmentation head; pass seg_head=True.")
        outs = self._stage_outputs(x)
        shallow = self.seg_shallow(outs[0])  # (N, K, H, W): stage 1 keeps the input resolution
        deep = self.seg_deep(self._fuse(outs))  # (N, K, H/8, W/8)
        deep = F.interpolate(deep, size=shallow.shape[-2:], mode="bilinear", align_corners=False)
        return F.interpolate(deep + shallow, size=x.shape[-2:], mode="bilinear", align_corners=False)


gapawarenet = register_variant(
    "gapawarenet", GapAwareNet, "GapAwareNet (``size``: tiny ~1.06M, small ~4.4M, base ~8.8M parameters)."
)
