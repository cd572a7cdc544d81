"""Where does the model look? Heatmap overlays for a checkpoint and some images.

    python -m lit_vision.explain --ckpt best.ckpt IMAGES... --method gradcam --out explain/

Methods (each gives an (N, H, W) map in [0, 1] at the input resolution, for the predicted class unless
``--class`` names one):

* ``gradcam`` / ``gradcam++``: Grad-CAM (Selvaraju et al., 2017) / Grad-CAM++ (Chattopadhay et al., 2018)
  from the ``grad-cam`` package, by default on the backbone's last convolution with a map of at least 8x8
  (``--target-layer`` takes a module name from ``model.backbone.named_modules()``).
* ``cam``: Class Activation Mapping (Zhou et al., 2016): the classifier applied at every position of the last
  feature map. Exact only for a global-average-pooling + linear (or 1x1 conv) head, which is checked: the
  map's spatial mean must reproduce the logit (GapAwareNet and the zoo's CNNs pass; ViTs do not).
* ``saliency``: vanilla gradient saliency (Simonyan et al., 2014), ``max_c |d logit / d x|``.
* ``occlusion``: occlusion sensitivity (Zeiler & Fergus, 2014): the drop in the class probability when a
  ``--patch`` square (pixels) is replaced by the dataset mean, slid with ``--stride``.

``--filters`` also writes the first convolution's filters as an image grid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torch import Tensor, nn

from lit_vision.apps import add_checkpoint_arguments, exit_on_error
from lit_vision.data.files import collect_inputs
from lit_vision.models.checkpoints import load_classifier
from lit_vision.models.classifier import ImageClassifier
from lit_vision.models.finetune import classifier_head
from lit_vision.predict import predict_items

__all__ = [
    "METHODS",
    "Explainer",
    "OverlayWriter",
    "class_activation_map",
    "default_target_layer",
    "explain",
    "filter_grid",
    "heatmaps",
    "main",
    "overlay",
]

METHODS = ("gradcam", "gradcam++", "cam", "saliency", "occlusion")


class _Normalized(nn.Module):
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
    wrapped = _Normalized(model).eval()
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
    raise ValueError(f"Unknown method {method!r}: one of {', '.join(METHODS)}.")


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


class Explainer(L.LightningModule):
    """A checkpoint's classifier whose predict step also explains each batch.

    ``lit_vision.predict.predict_items`` (the one inference loop) runs it like any model: the step returns
    ``{"probs": (N, K), "maps": (N, H, W), "classes": (N,)}``; the ``PredictionWriter`` writes the CSV row of
    each image from ``probs`` and :class:`OverlayWriter` the heatmap overlays. Grad-CAM and saliency
    differentiate, so the loop runs with ``inference_mode=False`` and the step enables gradients.

    Args:
        model: the loaded classifier.
        method: one of ``METHODS``.
        class_idx: explain this class for every image (default: each image's predicted class).
        target_layer, patch, stride: see :func:`heatmaps`.
    """

    def __init__(
        self,
        model: ImageClassifier,
        method: str = "gradcam",
        class_idx: int | None = None,
        target_layer: str | None = None,
        patch: int = 8,
        stride: int = 4,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}: one of {', '.join(METHODS)}.")
        self.model = model
        self.method, self.class_idx, self.target_layer = method, class_idx, target_layer
        self.patch, self.stride = patch, stride
        self.class_names = model.class_names
        self.input_size = model.input_size

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> dict:
        images = batch[0]
        classes = None
        if self.class_idx is not None:
            classes = torch.full((len(images),), self.class_idx, dtype=torch.long, device=images.device)
        with torch.enable_grad():
            maps, explained = heatmaps(
                self.model, images, self.method, classes, self.target_layer, self.patch, self.stride
            )
        probs = _Normalized(self.model)(images.float() / 255.0).float().softmax(-1)
        return {"probs": probs, "maps": maps, "classes": explained}


class OverlayWriter(BasePredictionWriter):
    """Save ``<out>/<index>_<stem>_<method>_<class>.png`` for each readable image of a batch; unreadable ones
    are named on stderr (their CSV row carries the error).

    Args:
        out: output folder.
        paths: the input path of each index.
        method: the method name, for the file names.
        class_names: the checkpoint's classes.
    """

    def __init__(self, out: Path, paths: Sequence[str], method: str, class_names: Sequence[str]) -> None:
        super().__init__(write_interval="batch")
        self.out, self.paths, self.method, self.class_names = out, paths, method, class_names
        self.written: list[Path] = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Tensor],
        batch_indices: Sequence[int] | None,
        batch: tuple[Tensor, Tensor, Tensor, Sequence[str]],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        images, _, indices, errors = batch
        rows = zip(
            images.cpu(),
            prediction["maps"].float().cpu(),
            prediction["classes"].tolist(),
            indices.tolist(),
            errors,
            strict=True,
        )
        for image, heat, c, index, error in rows:
            if error:
                print(f"skipped {self.paths[index]}: {error}", file=sys.stderr)
                continue
            stem = Path(self.paths[index]).stem
            path = self.out / f"{index:05d}_{stem}_{self.method}_{self.class_names[c]}.png"
            overlay(image, heat).save(path)
            self.written.append(path)


def explain(
    ckpt: str | Path,
    inputs: Sequence[str],
    out: str | Path,
    method: str = "gradcam",
    class_name: str | None = None,
    target_layer: str | None = None,
    patch: int = 8,
    stride: int = 4,
    filters: bool = False,
    trusted: bool = False,
    batch_size: int = 64,
    **trainer_kwargs: Any,
) -> list[Path]:
    """Write ``<out>/<index>_<stem>_<method>_<class>.png`` overlays, ``<out>/predictions.csv`` (the
    prediction of every input, with its error if unreadable) and, with ``filters``,
    ``first_layer_filters.png``; return the image paths. ``trusted``: allow a checkpoint with pickled
    objects (see ``lit_vision.models.checkpoints``); ``trainer_kwargs`` go to the Lightning Trainer
    (``accelerator``, ``devices``, ``precision``)."""
    model = load_classifier(ckpt, trusted)
    class_idx = None
    if class_name is not None:
        if class_name not in model.class_names:
            raise ValueError(f"Unknown class {class_name!r}; the checkpoint has {model.class_names}.")
        class_idx = model.class_names.index(class_name)
    explainer = Explainer(model, method, class_idx, target_layer, patch, stride)
    items = collect_inputs(inputs, model.class_names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overlays = OverlayWriter(out, [it.path for it in items], method, model.class_names)
    trainer_kwargs = {"enable_progress_bar": len(items) > batch_size, **trainer_kwargs}
    predict_items(
        explainer, items, out / "predictions.csv", batch_size, callbacks=[overlays], inference_mode=False,
        **trainer_kwargs,
    )  # fmt: skip
    written = list(overlays.written)
    if filters:
        path = out / "first_layer_filters.png"
        filter_grid(model).save(path)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m lit_vision.explain",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="image files or folders")
    add_checkpoint_arguments(parser)
    parser.add_argument("--method", choices=METHODS, default="gradcam")
    parser.add_argument("--out", default="explain", help="output folder (default: explain/)")
    parser.add_argument(
        "--class", dest="class_name", default=None, help="explain this class (default: predicted)"
    )
    parser.add_argument("--target-layer", default=None, help="Grad-CAM layer (a backbone module name)")
    parser.add_argument("--patch", type=int, default=8, help="occlusion patch side (pixels)")
    parser.add_argument("--stride", type=int, default=4, help="occlusion stride (pixels)")
    parser.add_argument("--filters", action="store_true", help="also write the first-layer filters")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (Lightning)")
    args = parser.parse_args(argv)
    with exit_on_error(ValueError, FileNotFoundError, KeyError):
        written = explain(
            args.ckpt, args.inputs, args.out, args.method, args.class_name, args.target_layer,
            args.patch, args.stride, args.filters, args.trust_checkpoint, args.batch_size,
            accelerator=args.accelerator,
        )  # fmt: skip
    print(f"wrote {len(written)} images to {args.out}")
    return written


if __name__ == "__main__":
    main()
