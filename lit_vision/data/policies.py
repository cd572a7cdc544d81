"""Batched augmentation policies: RandAugment, TrivialAugmentWide, colour jitter and random erasing.

RandAugment (Cubuk et al., 2020, arXiv:1909.13719) applies ``num_ops`` operations drawn uniformly per image at
one global ``magnitude``; TrivialAugmentWide (Müller & Hutter, 2021, arXiv:2103.10158) applies one operation
per image at a magnitude drawn uniformly per image. The operations and their magnitude ranges are
torchvision's (``transforms.RandAugment`` / ``TrivialAugmentWide``): identity, shear and translation along
x and y, rotation, brightness, colour (saturation), contrast, sharpness, posterize, solarize, autocontrast,
equalize; geometric ops use nearest sampling and fill with black, as torchvision's defaults do.

Batched means no loop over images: every image draws its own operation, magnitude and sign, and the batch
goes through each kind of operation once, with per-image parameters in tensor ops (one ``grid_sample`` with
a matrix per image for the geometric ones; per-image blend factors, thresholds and bit depths for the
colour ones; one histogram per image and channel for equalize). An image whose draw is another operation
passes through unchanged (identity matrix, blend factor 1, threshold 256, 8 bits), so the batch needs no
grouping and the device no host synchronization. The arithmetic stays in float on [0, 255] (rounded to
whole values after each operation, as torchvision's uint8 path is), so results match torchvision's
definitions but not its bits.

All functions take float images (N, 3, H, W) with values in [0, 255] and draw from torch's global RNG on
the images' device: a seed makes them repeatable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "OPS",
    "apply_ops",
    "batch_color_jitter",
    "batch_random_erasing",
    "rand_augment",
    "trivial_augment_wide",
]

_GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
_BLEND = ("brightness", "color", "contrast", "sharpness")
#: the operations, in torchvision's order
OPS = ("identity", *_GEOMETRIC, *_BLEND, "posterize", "solarize", "autocontrast", "equalize")
#: the operations whose magnitude takes a random sign
_SIGNED = (*_GEOMETRIC, *_BLEND)


def _magnitude_table(wide: bool, num_bins: int, height: int, width: int, device: torch.device) -> Tensor:
    """(len(OPS), num_bins): each operation's magnitude per bin, as torchvision defines them."""
    bins = torch.arange(num_bins, dtype=torch.float32, device=device)
    frac = bins / max(num_bins - 1, 1)  # 0 .. 1
    table = torch.zeros(len(OPS), num_bins, device=device)
    if wide:  # TrivialAugmentWide: absolute 32-pixel shifts whatever the image size
        shear, shift_x, shift_y, rotate, enhance = 0.99, 32.0, 32.0, 135.0, 0.99
    else:  # RandAugment: shifts relative to the image (150 px of ImageNet's 331)
        shear, shift_x, shift_y, rotate, enhance = 0.3, 150 / 331 * width, 150 / 331 * height, 30.0, 0.9
    levels = 6 if wide else 4  # posterize: 8 bits at bin 0 down to 8 - levels at the last bin
    values = {
        "shear_x": shear * frac,
        "shear_y": shear * frac,
        "translate_x": shift_x * frac,
        "translate_y": shift_y * frac,
        "rotate": rotate * frac,
        "posterize": 8 - (bins / ((num_bins - 1) / levels)).round()
        if num_bins > 1
        else torch.full_like(bins, 8),
        "solarize": 255.0 * (1 - frac),
        **{name: enhance * frac for name in _BLEND},
    }
    for name, row in values.items():
        table[OPS.index(name)] = row
    return table


def _index(name: str) -> int:
    return OPS.index(name)


def _geometric(x: Tensor, op: Tensor, value: Tensor) -> Tensor:
    """Shear / translate / rotate each image by its own ``value`` (others: identity), nearest, black fill."""
    n, _, h, w = x.shape
    # M maps an output pixel (x, y, 1) to the input pixel it takes (pixel units, origin at the top-left)
    m = torch.eye(3, device=x.device).repeat(n, 1, 1)
    shear_x, shear_y = op == _index("shear_x"), op == _index("shear_y")
    m[:, 0, 1] = torch.where(shear_x, -value, 0.0)  # around the top-left corner, as torchvision does
    m[:, 1, 0] = torch.where(shear_y, -value, 0.0)
    m[:, 0, 2] = torch.where(op == _index("translate_x"), -value, 0.0)
    m[:, 1, 2] = torch.where(op == _index("translate_y"), -value, 0.0)
    rotate = op == _index("rotate")
    angle = torch.where(rotate, value, 0.0) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = (w - 1) / 2, (h - 1) / 2  # rotation about the image centre
    last_row = torch.zeros(n, 3, device=x.device)
    last_row[:, 2] = 1.0
    rot = torch.stack(
        [
            torch.stack([cos, -sin, cx - cos * cx + sin * cy], -1),
            torch.stack([sin, cos, cy - sin * cx - cos * cy], -1),
            last_row,
        ],
        1,
    )  # (N, 3, 3); the identity where the op is not a rotation
    m = torch.where(rotate.view(n, 1, 1), rot, m)
    # pixel index -> grid_sample's normalized coordinate (align_corners=False): u = (2 i + 1) / size - 1.
    # Built by scalar fills, not from a host list: no host-to-device copy per batch on a GPU.
    to_norm, from_norm = torch.eye(3, device=x.device), torch.eye(3, device=x.device)
    to_norm[0, 0], to_norm[0, 2], to_norm[1, 1], to_norm[1, 2] = 2 / w, 1 / w - 1, 2 / h, 1 / h - 1
    from_norm[0, 0], from_norm[0, 2], from_norm[1, 1], from_norm[1, 2] = (
        w / 2,
        w / 2 - 0.5,
        h / 2,
        h / 2 - 0.5,
    )
    theta = (to_norm @ m @ from_norm)[:, :2]  # (N, 2, 3), normalized output -> normalized input
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _grayscale(x: Tensor) -> Tensor:
    """(N, 1, H, W) luma with torchvision's weights."""
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blurred(x: Tensor) -> Tensor:
    """PIL's SMOOTH kernel (what sharpness blends with); the border keeps its pixels, as in torchvision."""
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
    inner = F.conv2d(x, kernel, groups=x.shape[1])  # (N, C, H-2, W-2)
    out = x.clone()
    out[..., 1:-1, 1:-1] = inner.round()
    return out


def _colour(x: Tensor, op: Tensor, value: Tensor) -> Tensor:
    """Brightness / colour / contrast / sharpness: blend each image with its degenerate by 1 + ``value``."""
    n = x.shape[0]
    gray = _grayscale(x)
    degenerate = x  # (factor 1 where the op is none of these: any degenerate gives x)
    choices = (
        ("brightness", torch.zeros_like(x)),
        ("color", gray.expand_as(x)),
        ("contrast", gray.mean((1, 2, 3), keepdim=True).expand_as(x)),
        ("sharpness", _blurred(x)),
    )
    blend = torch.zeros(n, dtype=torch.bool, device=x.device)
    for name, target in choices:
        picked = (op == _index(name)).view(n, 1, 1, 1)
        degenerate = torch.where(picked, target, degenerate)
        blend |= picked.view(n)
    factor = torch.where(blend, 1.0 + value, 1.0).view(n, 1, 1, 1)
    return (degenerate + factor * (x - degenerate)).clamp(0, 255).round()


def _posterize_solarize(x: Tensor, op: Tensor, value: Tensor) -> Tensor:
    n = x.shape[0]
    bits = torch.where(op == _index("posterize"), value, 8.0).view(n, 1, 1, 1)
    step = torch.pow(2.0, 8 - bits)
    x = torch.floor(x / step) * step  # keep the top ``bits`` bits of each 8-bit value
    threshold = torch.where(op == _index("solarize"), value, 256.0).view(n, 1, 1, 1)
    return torch.where(x >= threshold, 255.0 - x, x)


def _autocontrast(x: Tensor, op: Tensor) -> Tensor:
    """Each channel stretched to 0..255 (a flat channel stays as it is)."""
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, 1.0, 255.0 / (hi - lo).clamp_min(1e-6))
    stretched = torch.where(flat, x, ((x - lo) * scale).clamp(0, 255).round())
    return torch.where((op == _index("autocontrast")).view(-1, 1, 1, 1), stretched, x)


def _equalize(x: Tensor, op: Tensor) -> Tensor:
    """Histogram equalization per image and channel, torchvision's (PIL's) look-up-table rule."""
    n, c, h, w = x.shape
    values = x.round().clamp(0, 255).long().reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, device=x.device).scatter_add_(
        1, values, torch.ones_like(values, dtype=torch.float32)
    )
    # the count of the highest value present: torchvision's step leaves the last non-empty bin out
    last = hist.gather(1, values.amax(1, keepdim=True))
    step = torch.floor((h * w - last) / 255)  # (N*C, 1)
    lut = torch.floor((hist.cumsum(1) + torch.floor(step / 2)) / step.clamp_min(1))
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)  # shifted: value v maps to the count below it
    equalized = torch.where(step > 0, lut.gather(1, values), values.float()).view(n, c, h, w)
    return torch.where((op == _index("equalize")).view(n, 1, 1, 1), equalized, x)


def apply_ops(x: Tensor, op: Tensor, value: Tensor) -> Tensor:
    """One operation per image: ``op`` (N,) indices into ``OPS``, ``value`` (N,) its signed magnitude (pixels
    for translations, degrees for rotation, the shear factor, the blend factor minus 1, bits for posterize,
    the threshold for solarize; ignored by identity, autocontrast and equalize). What the policies call."""
    x = _geometric(x, op, value)
    x = _colour(x, op, value)
    x = _posterize_solarize(x, op, value)
    x = _autocontrast(x, op)
    return _equalize(x, op)


def _draw(n: int, table: Tensor, bins: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    op = torch.randint(0, len(OPS), (n,), device=device)
    value = table[op, bins]
    signed = torch.zeros(len(OPS), dtype=torch.bool, device=device)
    for name in _SIGNED:
        signed[OPS.index(name)] = True  # scalar fills: no host list copied to the device
    flip = signed[op] & (torch.rand(n, device=device) < 0.5)
    return op, torch.where(flip, -value, value)


def rand_augment(x: Tensor, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> Tensor:
    """RandAugment: ``num_ops`` operations per image, each drawn uniformly and independently, at bin
    ``magnitude`` of ``num_magnitude_bins`` (torchvision's defaults; a random sign where it applies).
    Magnitude 0 leaves an image unchanged except for autocontrast and equalize, which have no magnitude, and
    solarize, whose threshold 255 still inverts pure white."""
    if not 0 <= magnitude < num_magnitude_bins:
        raise ValueError(f"magnitude must be in [0, {num_magnitude_bins}), got {magnitude}")
    table = _magnitude_table(False, num_magnitude_bins, x.shape[-2], x.shape[-1], x.device)
    bins = torch.full((x.shape[0],), magnitude, device=x.device)
    for _ in range(num_ops):
        op, value = _draw(x.shape[0], table, bins, x.device)
        x = apply_ops(x, op, value)
    return x


def trivial_augment_wide(x: Tensor, num_magnitude_bins: int = 31) -> Tensor:
    """TrivialAugmentWide: one operation per image, drawn uniformly, at a magnitude bin drawn uniformly per
    image (a random sign where it applies)."""
    table = _magnitude_table(True, num_magnitude_bins, x.shape[-2], x.shape[-1], x.device)
    bins = torch.randint(0, num_magnitude_bins, (x.shape[0],), device=x.device)
    op, value = _draw(x.shape[0], table, bins, x.device)
    return apply_ops(x, op, value)


def batch_color_jitter(
    x: Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4
) -> Tensor:
    """Colour jitter: brightness, contrast and saturation factors drawn per image uniformly from
    ``[1 - s, 1 + s]`` and applied in that order (torchvision's ``ColorJitter`` shuffles the order and
    adds hue; neither is done here). Values stay in [0, 255], not rounded."""
    n = x.shape[0]

    def factor(strength: float) -> Tensor:
        return (1 + strength * (2 * torch.rand(n, 1, 1, 1, device=x.device) - 1)).clamp_min(0)

    x = (x * factor(brightness)).clamp(0, 255)
    mean = _grayscale(x).mean((1, 2, 3), keepdim=True)
    x = (mean + factor(contrast) * (x - mean)).clamp(0, 255)
    gray = _grayscale(x)
    return (gray + factor(saturation) * (x - gray)).clamp(0, 255)


def batch_random_erasing(
    x: Tensor,
    p: float = 0.25,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
) -> Tensor:
    """Random erasing (Zhong et al., 2020, arXiv:1708.04896): with probability ``p`` per image, one rectangle
    of ``scale`` of the area (uniform) and aspect ratio ``ratio`` (log-uniform) is set to ``value`` (0: the
    dataset mean, on normalized images). A rectangle larger than the image is clipped to it (torchvision
    redraws up to ten times instead). Any value range: it is usually applied after normalization."""
    n, _, h, w = x.shape
    device = x.device
    area = h * w * torch.empty(n, device=device).uniform_(*scale)
    log_ratio = torch.empty(n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    eh = torch.sqrt(area * aspect).round().clamp(1, h)  # (N,) rectangle height, pixels
    ew = torch.sqrt(area / aspect).round().clamp(1, w)
    top = torch.floor(torch.rand(n, device=device) * (h - eh + 1))
    left = torch.floor(torch.rand(n, device=device) * (w - ew + 1))
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    top, left, eh, ew = (t.view(n, 1, 1) for t in (top, left, eh, ew))
    inside = (ys >= top) & (ys < top + eh) & (xs >= left) & (xs < left + ew)  # (N, H, W)
    erase = (torch.rand(n, device=device) < p).view(n, 1, 1) & inside
    return x.masked_fill(erase.unsqueeze(1), value)
