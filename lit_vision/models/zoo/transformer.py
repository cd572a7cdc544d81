"""Transformers over image tokens: ``vit_tiny`` and the hybrid ``cnn_transformer_small``/``_base``.

* ViT (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021): non-overlapping 4x4 patches (a
  32x32 image is 8x8 = 64 tokens), a class token, learned position embeddings, pre-norm encoder blocks.
  ``vit_tiny`` uses DeiT-Tiny's encoder (Touvron et al., 2021): width 192, depth 12, 3 heads (~5.4M).
* Hybrid (Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS 2021): a stride-4 stack
  of 3x3 conv-BN-act layers replaces the patchify layer, the encoder sees its 8x8 map as 64 tokens with
  learned position embeddings, and the head averages the tokens. small: width 256, depth 10 (~8.3M);
  base: width 384, depth 9 (~16.5M).

Inputs of another size work: position embeddings are resized bicubically to the token grid (as in ViT's
fine-tuning at higher resolution). Blocks carry stochastic depth (``drop_path_rate``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from lit_vision.models.zoo.backbone import Backbone
from lit_vision.models.zoo.layers import conv_norm_act, get_activation
from lit_vision.models.zoo.registry import register_variant

__all__ = [
    "ConvTransformer",
    "TransformerBlock",
    "VisionTransformer",
    "cnn_transformer_base",
    "cnn_transformer_small",
    "vit_tiny",
]


class TransformerBlock(nn.Module):
    """Pre-norm encoder block: x + MHSA(LN(x)), then x + MLP(LN(x)); both branches with stochastic depth.

    Args:
        dim: token width.
        heads: attention heads (``dim`` must be divisible by it).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        act: MLP activation name.
        drop_path: stochastic-depth probability of both residual branches.
    """

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float = 4.0, act: str = "gelu", drop_path: float = 0.0
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), get_activation(act)(), nn.Linear(hidden, dim))
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: Tensor) -> Tensor:  # (N, L, dim) -> (N, L, dim)
        h = self.norm1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class _TokenBackbone(Backbone):
    """Shared encoder: learned position embeddings for a ``grid`` x ``grid`` token map, blocks, final LN."""

    classifier_attr = "head"

    def __init__(
        self,
        grid: int,
        dim: int,
        depth: int,
        heads: int,
        num_classes: int,
        act: str,
        drop_rate: float,
        drop_path_rate: float,
        cls_token: bool,
    ) -> None:
        super().__init__()
        self.grid = grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        self.blocks = nn.Sequential(
            *[
                TransformerBlock(dim, heads, act=act, drop_path=drop_path_rate * i / max(1, depth - 1))
                for i in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def _pos_embed(self, h: int, w: int) -> Tensor:
        """(1, h * w, dim) position embeddings, resized bicubically when the token grid differs."""
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        pe = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        pe = F.interpolate(pe, size=(h, w), mode="bicubic", align_corners=False)
        return pe.permute(0, 2, 3, 1).reshape(1, h * w, -1)

    def _encode(self, fmap: Tensor) -> Tensor:
        """(N, dim, h, w) token map -> (N, [1 +] h * w, dim) encoded tokens."""
        n, _, h, w = fmap.shape
        tokens = fmap.flatten(2).transpose(1, 2) + self._pos_embed(h, w)  # (N, h*w, dim)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(n, -1, -1), tokens], dim=1)
        return self.norm(self.blocks(tokens))

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        x = features[:, 0] if self.cls_token is not None else features.mean(1)  # (N, dim)
        return x if pre_logits else self.head(self.drop(x))


class VisionTransformer(_TokenBackbone):
    """ViT with a class token.

    Args:
        num_classes: number of output logits.
        img_size: training resolution; sets the size of the position-embedding grid.
        patch_size: side of the square patches.
        dim: token width.
        depth: number of encoder blocks.
        heads: attention heads.
        act: MLP activation name.
        drop_rate: dropout probability before the linear head.
        drop_path_rate: stochastic-depth probability of the last block (linear from 0).
    """

    def __init__(
        self,
        num_classes: int = 10,
        img_size: int = 32,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        act: str = "gelu",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(
            img_size // patch_size, dim, depth, heads, num_classes, act, drop_rate, drop_path_rate, True
        )
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)  # (N, 3, H, W) -> (N, dim, H/p, W/p)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_features(self, x: Tensor) -> Tensor:
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(
                f"Input size {tuple(x.shape[-2:])} is not divisible by patch size {self.patch_size}."
            )
        return self._encode(self.patch_embed(x))  # (N, 1 + HW/p^2, dim)


class ConvTransformer(_TokenBackbone):
    """Conv stem (stride 4) + transformer encoder + token averaging.

    Args:
        num_classes: number of output logits.
        img_size: training resolution; sets the size of the position-embedding grid.
        stem_widths: channels of the first two stem convs (the third outputs ``dim``).
        dim: token width.
        depth: number of encoder blocks.
        heads: attention heads.
        act: activation name (stem and MLP).
        drop_rate: dropout probability before the linear head.
        drop_path_rate: stochastic-depth probability of the last block (linear from 0).
    """

    def __init__(
        self,
        num_classes: int = 10,
        img_size: int = 32,
        stem_widths: tuple[int, int] = (64, 128),
        dim: int = 256,
        depth: int = 10,
        heads: int = 8,
        act: str = "gelu",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(
            math.ceil(img_size / 4), dim, depth, heads, num_classes, act, drop_rate, drop_path_rate, False
        )
        c1, c2 = stem_widths
        self.stem = nn.Sequential(  # (N, 3, H, W) -> (N, dim, H/4, W/4)
            conv_norm_act(3, c1, 3, 1, act=act),
            conv_norm_act(c1, c2, 3, 2, act=act),
            conv_norm_act(c2, dim, 3, 2, act=act),
        )

    def forward_features(self, x: Tensor) -> Tensor:
        return self._encode(self.stem(x))  # (N, HW/16, dim)


# drop_path_rate 0.1: stochastic depth is part of every ViT/DeiT recipe for small data (Touvron et al., 2021)
vit_tiny = register_variant(
    "vit_tiny",
    VisionTransformer,
    "ViT-Tiny, 4x4 patches (~5.4M parameters).",
    patch_size=4,
    dim=192,
    depth=12,
    heads=3,
    drop_path_rate=0.1,
)
cnn_transformer_small = register_variant(
    "cnn_transformer_small",
    ConvTransformer,
    "Conv stem + 10 encoder blocks of width 256 (~8.3M parameters).",
    dim=256,
    depth=10,
    heads=8,
    drop_path_rate=0.1,
)
cnn_transformer_base = register_variant(
    "cnn_transformer_base",
    ConvTransformer,
    "Conv stem + 9 encoder blocks of width 384 (~16.5M parameters).",
    dim=384,
    depth=9,
    heads=8,
    drop_path_rate=0.1,
)
