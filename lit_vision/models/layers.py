"""Small building blocks shared by the model zoo.

Standard layers come from libraries: ``torchvision.ops`` (``Conv2dNormActivation``, ``SqueezeExcitation``,
``StochasticDepth``, ``DropBlock2d``) and kornia (``BlurPool2D``). Only the activation lookup lives here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn
from torchvision.ops import Conv2dNormActivation

__all__ = ["ACTIVATIONS", "conv_norm_act", "get_activation"]

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
