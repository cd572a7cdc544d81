"""The airbench94 net (Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024, arXiv:2404.00498).

=========  =========================================================  ==========================
block      layers                                                     out (32x32 in)
=========  =========================================================  ==========================
whiten     2x2 conv 3 -> 24, no padding, frozen (patch whitening)     24 x 31 x 31
           + its trained bias, then GELU
group 1    conv3x3 -> maxpool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU  64 x 15 x 15
group 2    the same                                                   256 x 7 x 7
group 3    the same                                                   256 x 3 x 3
head       global max pool, Linear(256 -> num_classes, no bias), x 1/9 num_classes
=========  =========================================================  ==========================

What makes it train fast, all from the paper (section 3):

* **Patch whitening.** The first layer's 24 filters are the eigenvectors of the 2x2 patch covariance of the
  training images, scaled by 1/sqrt(eigenvalue + eps), and their negatives (both signs, so a GELU after it
  loses nothing). They are computed from the training images before training starts
  (:meth:`AirbenchNet.init_from_data`) and frozen; the layer's bias trains for the first
  ``whiten_bias_epochs`` epochs only (:meth:`AirbenchNet.set_epoch`).
* **Identity (Dirac) initialization** of every 3x3 conv's first ``in_channels`` output channels: each conv
  starts as an identity on its input plus fresh channels, an implicit residual without skip connections.
* **BatchNorm with a frozen scale** (weight fixed at 1, bias trained), momentum 0.4 in PyTorch's convention
  (the paper's 0.6 is the weight of the old running value) and epsilon 1e-12.
* **Logits scaled by 1/9**, a temperature that pairs with label smoothing 0.2 in the paper's recipe.

The rest of the recipe (decoupled SGD, the triangular schedule, Lookahead-style EMA, alternating flip, TTA)
lives where any backbone can use it: ``configs/speedrun/cifar10_94.yaml`` puts it together.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_vision.models.zoo.backbone import Backbone
from lit_vision.models.zoo.layers import get_activation
from lit_vision.models.zoo.registry import register_backbone

__all__ = ["AirbenchNet", "PatchWhitening", "airbench94", "dirac_init_"]


def dirac_init_(conv: nn.Conv2d) -> nn.Conv2d:
    """Make the first ``in_channels`` output channels of ``conv`` an identity (the rest keep their init).

    A fresh conv with ``out_channels >= in_channels`` then passes its input through unchanged on those
    channels ("same" padding, odd kernel); with fewer outputs, the first ``out_channels`` inputs pass.
    """
    with torch.no_grad():
        weight = conv.weight  # (out, in, k, k)
        nn.init.dirac_(weight[: min(weight.shape[0], weight.shape[1])])
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


class PatchWhitening(nn.Conv2d):
    """A ``k`` x ``k`` conv (no padding) that whitens the image patches it sees; frozen weights.

    ``fit(images)`` sets the ``2 * C * k * k`` filters to ``+-V / sqrt(lambda + eps)`` for the eigenpairs
    ``(lambda, V)`` of the covariance of every ``k`` x ``k`` patch of ``images`` (largest eigenvalue first).
    The output's positive half then has (approximately) identity patch covariance.

    Args:
        in_channels: image channels.
        kernel_size: patch side in pixels.
        eps: added to the eigenvalues before the square root (bounds the gain of near-zero directions).
    """

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4) -> None:
        width = in_channels * kernel_size * kernel_size
        super().__init__(in_channels, 2 * width, kernel_size, padding=0, bias=True)
        self.eps = eps
        self.weight.requires_grad_(False)  # computed from data, never trained
        with torch.no_grad():
            self.bias.zero_()

    @torch.no_grad()
    def fit(self, images: Tensor) -> None:
        """Set the filters from normalized float images (N, C, H, W) (any device; float64 internally)."""
        c, k = self.in_channels, self.kernel_size[0]
        # (N, C, H', W', k, k) -> (N * H' * W', C * k * k): every patch as a row, in the weight's layout
        patches = images.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        patches = patches.to(torch.float64)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)  # largest first
        filters = (eigenvectors / (eigenvalues.clamp_min(0) + self.eps).sqrt()).T  # (C*k*k, C*k*k)
        filters = filters.reshape(-1, c, k, k)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1 (only the bias trains), as in airbench.

    Args:
        num_features: channels.
        momentum: PyTorch's convention: weight of the new batch statistic in the running estimate.
        eps: added to the variance.
    """

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvGroup(nn.Module):
    """conv3x3 -> maxpool 2 -> BN -> act -> conv3x3 -> BN -> act; both convs Dirac-initialized."""

    def __init__(self, cin: int, cout: int, act: str, bn_momentum: float, bn_eps: float) -> None:
        super().__init__()
        self.conv1 = dirac_init_(nn.Conv2d(cin, cout, 3, padding=1, bias=False))
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(cout, bn_momentum, bn_eps)
        self.conv2 = dirac_init_(nn.Conv2d(cout, cout, 3, padding=1, bias=False))
        self.norm2 = FrozenScaleBatchNorm(cout, bn_momentum, bn_eps)
        self.act = get_activation(act)()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # pooling before BN: 4x less to normalize
        return self.act(self.norm2(self.conv2(x)))


class AirbenchNet(Backbone):
    """airbench94's net; see the module docstring for the layer table and the paper's reasons.

    Two hooks that :class:`~lit_vision.models.ImageClassifier` calls (see :class:`Backbone`):
    ``init_from_data(images)`` computes the whitening filters from ``data_init_images`` normalized training
    images before ``fit`` (not when resuming or loading pretrained weights), and ``set_epoch(epoch)``
    stops training the whitening bias after ``whiten_bias_epochs`` epochs.

    Args:
        num_classes: number of output logits.
        widths: output channels of the three conv groups (the paper's base width 64: 64, 256, 256).
        whiten_kernel: side of the whitened patches in pixels.
        whiten_eps: eigenvalue floor of the whitening (see :class:`PatchWhitening`).
        whiten_bias_epochs: epochs during which the whitening layer's bias trains; then it is frozen.
        data_init_images: training images the whitening statistics are computed from.
        bn_momentum: BatchNorm momentum in PyTorch's convention (the paper's 0.6 is 1 - 0.4).
        bn_eps: BatchNorm epsilon.
        logit_scale: multiplies the logits (a fixed temperature).
        act: activation (``gelu`` in the paper; any name of ``lit_vision.models.zoo.layers.ACTIVATIONS``).
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (64, 256, 256),
        whiten_kernel: int = 2,
        whiten_eps: float = 5e-4,
        whiten_bias_epochs: int = 3,
        data_init_images: int = 5000,
        bn_momentum: float = 0.4,
        bn_eps: float = 1e-12,
        logit_scale: float = 1 / 9,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths must be three positive channel counts, got {widths}")
        self.whiten = PatchWhitening(3, whiten_kernel, whiten_eps)
        self.whiten_act = get_activation(act)()
        w1, w2, w3 = widths
        self.groups = nn.Sequential(
            ConvGroup(self.whiten.out_channels, w1, act, bn_momentum, bn_eps),
            ConvGroup(w1, w2, act, bn_momentum, bn_eps),
            ConvGroup(w2, w3, act, bn_momentum, bn_eps),
        )
        self.num_features = w3
        self.fc = nn.Linear(w3, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.whiten_bias_epochs = whiten_bias_epochs
        self.data_init_images = data_init_images

    def init_from_data(self, images: Tensor) -> None:
        """Whitening filters from normalized training images (N, 3, H, W)."""
        self.whiten.fit(images)

    def set_epoch(self, epoch: int) -> None:
        """Train the whitening bias in the first ``whiten_bias_epochs`` epochs only (0-based ``epoch``)."""
        self.whiten.bias.requires_grad_(epoch < self.whiten_bias_epochs)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.groups(self.whiten_act(self.whiten(x)))  # (N, 256, 3, 3) for 32x32 inputs

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        # global max pooling: the paper's MaxPool2d(3) over the 3x3 map of a 32x32 image, for any input size
        x = features.amax((2, 3))  # (N, num_features)
        return x if pre_logits else self.fc(x) * self.logit_scale


@register_backbone
def airbench94(
    num_classes: int = 10,
    widths: tuple[int, int, int] = (64, 256, 256),
    whiten_bias_epochs: int = 3,
    act: str = "gelu",
    **kwargs: float | int,
) -> AirbenchNet:
    """airbench94's net (~2M parameters); ``widths``, ``whiten_bias_epochs``, ``act`` and every other
    :class:`AirbenchNet` argument are options."""
    return AirbenchNet(
        num_classes=num_classes,
        widths=tuple(widths),
        whiten_bias_epochs=whiten_bias_epochs,
        act=act,
        **kwargs,
    )
