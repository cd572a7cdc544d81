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

``--method activations --layer NAME`` shows what a layer computes instead: for each image, the ``--top-k``
channels of that layer's output with the highest mean activation, as maps beside the image (one row per
image; ``activations.json`` lists the channels and their means). ``--list-layers`` prints the backbone's
layers that output feature maps, with their shapes, to pick ``NAME`` from.

``--filters`` also writes the first convolution's filters as an image grid.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from lit_vision.apps import add_checkpoint_arguments
from lit_vision.data.files import collect_inputs
from lit_vision.errors import exit_on_error
from lit_vision.models.inference.classifier_loading import load_classifier
from lit_vision.models.inference.heatmaps import (
    HEATMAP_METHODS,
    METHODS,
    Normalized,
    activation_row,
    class_activation_map,
    default_target_layer,
    feature_layers,
    filter_grid,
    heatmaps,
    overlay,
    top_activations,
)
from lit_vision.models.training.classifier import ImageClassifier
from lit_vision.predict_images import predict_items

__all__ = [
    "HEATMAP_METHODS",
    "METHODS",
    "Explainer",
    "OverlayWriter",
    "activation_row",
    "class_activation_map",
    "default_target_layer",
    "explain",
    "feature_layers",
    "filter_grid",
    "heatmaps",
    "main",
    "overlay",
    "top_activations",
]


class Explainer(L.LightningModule):
    """A checkpoint's classifier whose predict step also explains each batch.

    ``lit_vision.predict_images.predict_items`` (the one inference loop) runs it like any model: the step
    returns ``{"probs": (N, K), "maps": (N, H, W), "classes": (N,)}``; the ``PredictionWriter`` writes the
    CSV row of each image from ``probs`` and :class:`OverlayWriter` the heatmap overlays. Grad-CAM and
    saliency differentiate, so the loop runs with ``inference_mode=False`` and the step enables gradients.

    Args:
        model: the loaded classifier.
        method: one of ``METHODS``.
        class_idx: explain this class for every image (default: each image's predicted class).
        target_layer, patch, stride: see :func:`heatmaps`; ``target_layer`` is the layer whose channels
            ``activations`` shows (required there).
        top_k: channels per image for ``activations``.
    """

    def __init__(
        self,
        model: ImageClassifier,
        method: str = "gradcam",
        class_idx: int | None = None,
        target_layer: str | None = None,
        patch: int = 8,
        stride: int = 4,
        top_k: int = 8,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"Unknown method {method!r}: one of {', '.join(METHODS)}.")
        if method == "activations" and not target_layer:
            raise ValueError("--method activations needs --layer NAME (--list-layers prints the names).")
        self.model = model
        self.method, self.class_idx, self.target_layer = method, class_idx, target_layer
        self.patch, self.stride, self.top_k = patch, stride, top_k
        self.class_names = model.class_names
        self.input_size = model.input_size

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> dict:
        images = batch[0]
        if self.method == "activations":
            assert self.target_layer is not None
            maps, channels, means, probs = top_activations(self.model, images, self.target_layer, self.top_k)
            return {"probs": probs, "activations": maps, "channels": channels, "means": means}
        classes = None
        if self.class_idx is not None:
            classes = torch.full((len(images),), self.class_idx, dtype=torch.long, device=images.device)
        with torch.enable_grad():
            maps, explained = heatmaps(
                self.model, images, self.method, classes, self.target_layer, self.patch, self.stride
            )
        probs = Normalized(self.model)(images.float() / 255.0).float().softmax(-1)
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

    def __init__(
        self,
        out: Path,
        paths: Sequence[str],
        method: str,
        class_names: Sequence[str],
        layer: str | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.out, self.paths, self.method, self.class_names = out, paths, method, class_names
        self.layer = layer
        self.written: list[Path] = []
        self.channels: dict[str, dict[str, list]] = {}  # activations: file name -> channels and means

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
        if "activations" in prediction:
            self._write_activations(images, prediction, indices.tolist(), errors)
            return
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

    def _write_activations(
        self, images: Tensor, prediction: dict[str, Tensor], indices: list[int], errors: Sequence[str]
    ) -> None:
        layer = (self.layer or "layer").replace("/", "_")
        rows = zip(
            images.cpu(),
            prediction["activations"].float().cpu(),
            prediction["channels"].tolist(),
            prediction["means"].tolist(),
            indices,
            errors,
            strict=True,
        )
        for image, maps, channels, means, index, error in rows:
            if error:
                print(f"skipped {self.paths[index]}: {error}", file=sys.stderr)
                continue
            path = self.out / f"{index:05d}_{Path(self.paths[index]).stem}_activations_{layer}.png"
            activation_row(image, maps).save(path)
            self.written.append(path)
            self.channels[path.name] = {"channels": channels, "mean_activation": [round(m, 6) for m in means]}

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.channels:  # which channel each tile of a row shows (rank 0's images under DDP)
            meta = {"layer": self.layer, "images": self.channels}
            (self.out / "activations.json").write_text(json.dumps(meta, indent=2))


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
    top_k: int = 8,
    **trainer_kwargs: Any,
) -> list[Path]:
    """Write ``<out>/<index>_<stem>_<method>_<class>.png`` overlays, ``<out>/predictions.csv`` (the
    prediction of every input, with its error if unreadable) and, with ``filters``,
    ``first_layer_filters.png``; return the image paths. ``trusted``: allow a checkpoint with pickled
    objects (see ``lit_vision.models.inference.classifier_loading``); ``trainer_kwargs`` go to the Lightning
    Trainer     (``accelerator``, ``devices``, ``precision``)."""
    model = load_classifier(ckpt, trusted)
    class_idx = None
    if class_name is not None:
        if class_name not in model.class_names:
            raise ValueError(f"Unknown class {class_name!r}; the checkpoint has {model.class_names}.")
        class_idx = model.class_names.index(class_name)
    explainer = Explainer(model, method, class_idx, target_layer, patch, stride, top_k)
    items = collect_inputs(inputs, model.class_names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    overlays = OverlayWriter(out, [it.path for it in items], method, model.class_names, target_layer)
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
    parser.add_argument("inputs", nargs="*", help="image files or folders")
    add_checkpoint_arguments(parser)
    parser.add_argument("--method", choices=METHODS, default="gradcam")
    parser.add_argument("--out", default="explain", help="output folder (default: explain/)")
    parser.add_argument(
        "--class", dest="class_name", default=None, help="explain this class (default: predicted)"
    )
    parser.add_argument(
        "--target-layer",
        "--layer",
        dest="target_layer",
        default=None,
        help="Grad-CAM's layer, or the layer --method activations shows (a name --list-layers prints)",
    )
    parser.add_argument("--top-k", type=int, default=8, help="channels per image for --method activations")
    parser.add_argument(
        "--list-layers", action="store_true", help="print the layers that output feature maps, and exit"
    )
    parser.add_argument("--patch", type=int, default=8, help="occlusion patch side (pixels)")
    parser.add_argument("--stride", type=int, default=4, help="occlusion stride (pixels)")
    parser.add_argument("--filters", action="store_true", help="also write the first-layer filters")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (Lightning)")
    args = parser.parse_args(argv)
    if args.list_layers:
        with exit_on_error(ValueError, FileNotFoundError):
            layers = feature_layers(load_classifier(args.ckpt, args.trust_checkpoint))
        width = max(len(name) for name, _ in layers)
        for name, (c, h, w) in layers:
            print(f"{name:<{width}}  {c} x {h} x {w}")
        return []
    if not args.inputs:
        parser.error("the following arguments are required: inputs")
    with exit_on_error(ValueError, FileNotFoundError, KeyError):
        written = explain(
            args.ckpt, args.inputs, args.out, args.method, args.class_name, args.target_layer,
            args.patch, args.stride, args.filters, args.trust_checkpoint, args.batch_size, args.top_k,
            accelerator=args.accelerator,
        )  # fmt: skip
    print(f"wrote {len(written)} images to {args.out}")
    return written


if __name__ == "__main__":
    main()
