"""Small building blocks shared by the model zoo.

Standard layers come from libraries: ``torchvision.ops`` (``Conv2dNormActivation``, ``SqueezeExcitation``,
``StochasticDepth``, ``DropBlock2d``). Here: the activation lookup, and ``BlurPool2d``, whose library versions
either rebuild their kernel on every call (kornia) or come with an optional dependency (timm).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import Conv2dNormActivation

__all__ = [
    "ACTIVATIONS",
    "BlurPool2d",
    "GlobalAvgPool2d",
    "conv_norm_act",
    "get_activation",
    "own_forward_batchnorms",
]

#: Activation functions selectable by name in every backbone that takes ``act``.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,  # swish(x) = x * sigmoid(x) is SiLU
    "mish": nn.Mish,
    "leaky_relu": partial(nn.LeakyReLU, 0.1),
}


def get_activation(name: str) -> Callable[[], nn.Module]:
    """The activation module factory for ``name`` (one of :data:`ACTIVATIONS`).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}.") from None


def conv_norm_act(
    cin: int,
    cout: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    dilation: int = 1,
    act: str | None = "relu",
) -> Conv2dNormActivation:
    """Conv (no bias: BN follows) -> BatchNorm -> activation, "same" padding for odd kernels."""
    return Conv2dNormActivation(
        cin,
        cout,
        kernel_size,
        stride,
        groups=groups,
        dilation=dilation,
        activation_layer=None if act is None else get_activation(act),
        inplace=None,  # GELU/Mish take no ``inplace``; the others default to out-of-place
    )


class GlobalAvgPool2d(nn.Module):
    """(N, C, H, W) -> (N, C, 1, 1): the spatial mean, as ``nn.AdaptiveAvgPool2d(1)`` computes it.

    A plain mean instead of adaptive pooling because adaptive average pooling's backward has no
    deterministic CUDA kernel: with ``trainer.deterministic: true`` it raises in the first backward. A
    mean over the spatial dimensions is a reduction, deterministic on every device.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((-2, -1), keepdim=True)


class BlurPool2d(nn.Module):
    """Anti-aliased downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again",
    arXiv:1904.11486): a normalized binomial blur, then every ``stride``-th pixel; zero padding of
    ``(k - 1) // 2`` keeps ``ceil(H / stride)`` rows for odd ``k`` (the convention of antialiased-cnns and
    kornia's ``BlurPool2D``, whose outputs this matches).

    The depthwise kernel is built once, for ``channels``, as a non-persistent buffer: checkpoints hold no
    copy of it, and ``forward`` is one grouped convolution.

    Args:
        channels: input channels (the kernel is repeated per channel).
        kernel_size: side of the binomial kernel (odd; 3 is [1, 2, 1] x [1, 2, 1] / 16).
        stride: subsampling step, in pixels.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.channels, self.kernel_size, self.stride = channels, kernel_size, stride
        row = torch.tensor([float(math.comb(kernel_size - 1, i)) for i in range(kernel_size)])
        kernel = torch.outer(row, row) / row.sum() ** 2  # (k, k), sums to 1
        self.register_buffer("kernel", kernel.expand(channels, 1, -1, -1).contiguous(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        # (N, C, H, W) -> (N, C, ceil(H / stride), ceil(W / stride))
        pad = (self.kernel_size - 1) // 2
        return F.conv2d(x, self.kernel.to(x.dtype), stride=self.stride, padding=pad, groups=self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}"


def own_forward_batchnorms(model: nn.Module) -> dict[str, type]:
    """The BatchNorm layers of ``model`` whose class overrides ``forward`` (name -> class), such as timm's
    ``BatchNormAct2d``: what a conversion to ``nn.SyncBatchNorm`` would reduce to a plain BatchNorm."""
    return {
        name: type(m)
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm)
        and not isinstance(m, nn.SyncBatchNorm)
        and type(m).forward is not _BatchNorm.forward
    }
