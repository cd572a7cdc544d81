"""Heatmaps and feature maps of a classifier: what ``python -m lit_vision.explain`` writes and what the W&B
media callback logs during training (both import it from here; it knows nothing of either).

Heatmap methods (each gives an (N, H, W) map in [0, 1] at the input resolution): Grad-CAM / Grad-CAM++
(from the ``grad-cam`` package), CAM, gradient saliency and occlusion; see ``lit_vision.explain`` for the
papers and the choices. ``top_activations`` and ``feature_layers`` look inside one layer instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from lit_vision.models.training.classifier import ImageClassifier
from lit_vision.models.training.pretrained import classifier_head

__all__ = [
    "HEATMAP_METHODS",
    "METHODS",
    "Normalized",
    "activation_row",
    "class_activation_map",
    "default_target_layer",
    "feature_layers",
    "filter_grid",
    "heatmaps",
    "overlay",
    "top_activations",
]

#: the methods that give one heatmap per image (``heatmaps``)
HEATMAP_METHODS = ("gradcam", "gradcam++", "cam", "saliency", "occlusion")
METHODS = (*HEATMAP_METHODS, "activations")


class Normalized(nn.Module):
    """[0, 1] images -> logits, with the checkpoint's normalization: what the CAM libraries call."""

    def __init__(self, model: ImageClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.backbone(self.model.normalize(x))


def default_target_layer(backbone: nn.Module, input_size: int = 32, min_side: int = 8) -> nn.Module:
    """The last ``Conv2d`` whose output is at least ``min_side`` x ``min_side`` for this input size.

    The usual choice, the very last convolution, has a 4x4 (or 1x1) map on 32-pixel CIFAR images: too coarse
    to say where in the image the evidence is (on the toy task of tests/test_explain.py, with the compact
    CNN, it put less heat on the signal than a uniform map). A 1x1-conv classifier (GapAwareNet's) is skipped.
    """
    get_classifier = getattr(backbone, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    sides: dict[nn.Module, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _, out: sides.__setitem__(mod, min(out.shape[-2:])))
        for m in backbone.modules()
        if isinstance(m, nn.Conv2d) and m is not head
    ]
    was_training = backbone.training
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        backbone.train(was_training)
        for h in hooks:
            h.remove()
    if not sides:
        raise ValueError("The backbone has no convolution; use --method saliency or occlusion.")
    convs = list(sides)  # in call order
    fine = [m for m in convs if sides[m] >= min_side]
    return (fine or convs)[-1]


def _normalize(maps: Tensor) -> Tensor:
    """(N, H, W) -> each map scaled to [0, 1]."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)


def class_activation_map(features: Tensor, head: nn.Module, class_idx: int | Tensor) -> Tensor:
    """Class activation maps from a feature map and a linear (or 1x1-conv) classifier head.

    ``CAM_k(i, j) = w_k . F(:, i, j) + b_k``: the head applied at every position instead of after pooling.
    For a head that follows global average pooling, the CAM's spatial mean equals the logit of class k.

    Args:
        features: (N, C, h, w) feature map (e.g. ``forward_features`` of a backbone).
        head: ``nn.Conv2d`` with a 1x1 kernel or ``nn.Linear``, mapping C features to class logits.
        class_idx: one class for the whole batch, or an (N,) tensor of classes.

    Returns:
        (N, h, w) maps in logit units.
    """
    if isinstance(head, nn.Conv2d):
        if head.kernel_size != (1, 1):
            raise ValueError(f"A CAM needs a 1x1-conv head, got kernel {head.kernel_size}.")
        weight = head.weight.flatten(1)  # (K, C)
    elif isinstance(head, nn.Linear):
        weight = head.weight  # (K, C)
    else:
        raise TypeError(f"A CAM needs an nn.Conv2d (1x1) or nn.Linear head, got {type(head).__name__}.")
    n = features.shape[0]
    idx = torch.as_tensor(class_idx, device=features.device).long()
    if idx.ndim == 0:
        idx = idx.expand(n)
    w = weight[idx].to(features.dtype)  # (N, C)
    cam = torch.einsum("nc,nchw->nhw", w, features)
    if head.bias is not None:
        cam = cam + head.bias[idx].to(features.dtype).view(n, 1, 1)
    return cam


def _cam(model: ImageClassifier, x: Tensor, classes: Tensor) -> Tensor:
    backbone = model.backbone
    if not hasattr(backbone, "forward_features"):
        raise ValueError("CAM needs a backbone with forward_features and a linear (or 1x1 conv) head.")
    try:
        head = classifier_head(backbone)
    except TypeError as err:
        raise ValueError(f"CAM needs the backbone's classifier: {err}") from None
    with torch.no_grad():
        features = backbone.forward_features(x)
        if features.ndim != 4:
            raise ValueError("CAM needs a spatial feature map; this backbone's features are pooled.")
        maps = class_activation_map(features, head, classes)  # (N, h, w), logit units
        logits = backbone(x).gather(1, classes[:, None]).squeeze(1)
    if not torch.allclose(maps.mean((1, 2)), logits, atol=1e-3, rtol=1e-3):
        raise ValueError(
            "CAM is exact only for a global-average-pooling + linear head; this backbone's head is not "
            "(the map's mean does not reproduce the logit). Use --method gradcam."
        )
    return maps


def _occlusion(
    model: nn.Module, x01: Tensor, classes: Tensor, fill: Tensor, patch: int, stride: int
) -> Tensor:
    n, _, h, w = x01.shape
    with torch.no_grad():
        base = model(x01).softmax(-1).gather(1, classes[:, None])  # (N, 1)
        drop = torch.zeros(n, h, w, device=x01.device)
        count = torch.zeros(1, h, w, device=x01.device)
        for top in range(0, max(h - patch, 0) + 1, stride):
            for left in range(0, max(w - patch, 0) + 1, stride):
                occluded = x01.clone()
                occluded[:, :, top : top + patch, left : left + patch] = fill.view(1, 3, 1, 1)
                p = model(occluded).softmax(-1).gather(1, classes[:, None])
                drop[:, top : top + patch, left : left + patch] += (base - p).view(n, 1, 1)
                count[:, top : top + patch, left : left + patch] += 1
    return drop / count.clamp_min(1)


def heatmaps(
    model: ImageClassifier,
    images: Tensor,
    method: str,
    classes: Tensor | None = None,
    target_layer: str | None = None,
    patch: int = 8,
    stride: int = 4,
) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, H, W) -> (maps (N, H, W) in [0, 1], the explained classes (N,))."""
    model = model.eval()
    wrapped = Normalized(model).eval()
    x01 = images.float() / 255.0
    if classes is None:
        with torch.no_grad():
            classes = wrapped(x01).argmax(-1)
    h, w = images.shape[-2:]
    if method in ("gradcam", "gradcam++"):
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        layer = (
            dict(model.backbone.named_modules())[target_layer]
            if target_layer
            else default_target_layer(model.backbone, model.input_size)
        )
        cam_cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
        with cam_cls(model=wrapped, target_layers=[layer]) as cam:
            maps = cam(input_tensor=x01, targets=[ClassifierOutputTarget(int(c)) for c in classes])
        return torch.from_numpy(maps).float().to(images.device), classes
    if method == "cam":
        x = model.normalize(x01)
        maps = _cam(model, x, classes).clamp_min(0)  # positive evidence for the class
        maps = F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return _normalize(maps), classes
    if method == "saliency":
        x = x01.clone().requires_grad_(True)
        logits = wrapped(x)
        (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), x)
        return _normalize(grad.abs().amax(1)), classes
    if method == "occlusion":
        maps = _occlusion(wrapped, x01, classes, model.input_mean.to(x01.device), patch, stride)
        return _normalize(maps.clamp_min(0)), classes
    if method == "activations":
        raise ValueError("activations are per channel, not one heatmap: use top_activations().")
    raise ValueError(f"Unknown method {method!r}: one of {', '.join(HEATMAP_METHODS)}.")


def feature_layers(model: ImageClassifier) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, (C, h, w))`` of every backbone module whose output is a feature map (a 4-D tensor) for one
    image at the training size, in the order the forward pass reaches them (a module called twice: its
    first call)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.ndim == 4 and name not in shapes:
                shapes[name] = tuple(output.shape[1:])

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.backbone.named_modules() if n]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, model.input_size, model.input_size))
    finally:
        for handle in handles:
            handle.remove()
    return list(shapes.items())


def top_activations(
    model: ImageClassifier, images: Tensor, layer: str, k: int = 8
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """uint8 images (N, 3, H, W) -> the ``k`` channels of ``layer``'s output with the highest mean
    activation per image: (maps (N, k, h, w), channels (N, k), their means (N, k), probabilities (N, K)).
    ``k`` is capped at the layer's channel count."""
    modules = dict(model.backbone.named_modules())
    if layer not in modules:
        raise ValueError(f"No layer {layer!r} in the backbone; --list-layers prints the names.")
    captured: list[Tensor] = []
    handle = modules[layer].register_forward_hook(lambda m, a, out: captured.append(out))
    try:
        with torch.no_grad():
            logits = model.eval()(model.normalize(images.float() / 255.0))
    finally:
        handle.remove()
    out = captured[0] if captured else None
    if not isinstance(out, Tensor) or out.ndim != 4:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"Layer {layer!r} outputs {shape}, not a (N, C, h, w) feature map; --list-layers prints the "
            "layers that do."
        )
    out = out.float()
    means = out.mean((2, 3))  # (N, C)
    top, channels = means.topk(min(k, out.shape[1]), dim=1)  # (N, k), strongest first
    maps = out.gather(1, channels[:, :, None, None].expand(-1, -1, *out.shape[2:]))
    return maps, channels, top, logits.float().softmax(-1)


def activation_row(image: Tensor, maps: Tensor, scale: int = 4) -> Image.Image:
    """uint8 (3, H, W) image and (k, h, w) activation maps -> one RGB row: the image, then each map
    scaled to [0, 1] on its own and shown (viridis) at the image's size, a 1-pixel gap between tiles."""
    from matplotlib import colormaps

    h, w = image.shape[-2:]
    up = F.interpolate(maps[:, None].float(), size=(h, w), mode="nearest")[:, 0]
    tiles = [image.permute(1, 2, 0).numpy().astype(np.float32) / 255.0]
    tiles += [colormaps["viridis"](_normalize(m[None])[0].numpy())[..., :3] for m in up]
    row = np.ones((h, len(tiles) * (w + 1) - 1, 3), dtype=np.float32)
    for i, tile in enumerate(tiles):
        row[:, i * (w + 1) : i * (w + 1) + w] = tile
    picture = Image.fromarray((row * 255).round().astype(np.uint8))
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def overlay(image: Tensor, heat: Tensor, scale: int = 4, alpha: float = 0.5) -> Image.Image:
    """uint8 (3, H, W) image + (H, W) map in [0, 1] -> an RGB overlay upscaled ``scale`` times (jet)."""
    from matplotlib import colormaps

    rgb = image.permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    colored = colormaps["jet"](heat.numpy())[..., :3]
    blended = (1 - alpha) * rgb + alpha * colored
    picture = Image.fromarray((blended * 255).round().astype(np.uint8))
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def filter_grid(model: ImageClassifier, scale: int = 8) -> Image.Image:
    """The first convolution's filters (out, 3, k, k) as an RGB grid, each filter scaled to [0, 1]."""
    first = next((m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None or first.in_channels != 3:
        raise ValueError("The backbone does not start with an RGB convolution.")
    w = first.weight.detach().float()  # (out, 3, k, k)
    lo = w.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = w.flatten(1).max(1).values.view(-1, 1, 1, 1)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    cols = int(np.ceil(np.sqrt(len(w))))
    rows = int(np.ceil(len(w) / cols))
    k = w.shape[-1]
    grid = torch.ones(3, rows * (k + 1) + 1, cols * (k + 1) + 1)
    for i, f in enumerate(w):
        r, c = divmod(i, cols)
        grid[:, 1 + r * (k + 1) : 1 + r * (k + 1) + k, 1 + c * (k + 1) : 1 + c * (k + 1) + k] = f
    picture = Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
