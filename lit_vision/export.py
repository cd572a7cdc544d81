"""Export a checkpoint to ONNX or TorchScript with the input normalization built in, or its weights to
safetensors with a model card.

    python -m lit_vision.export --ckpt runs/x/version_0/checkpoints/best.ckpt --format onnx [--out m.onnx]
    python -m lit_vision.export --ckpt runs/x/version_0/checkpoints/best.ckpt --format safetensors

``safetensors``: ``<out>.safetensors`` (weights and what rebuilds the model; loading runs no code, and
``predict.py --ckpt`` takes it) and ``<out>.md``, the model card (classes, input, the run's metrics and
config). See ``lit_vision.models.checkpoint_io.safetensors_file``.

Input contract (``--input``): ``uint8`` (default), an (N, 3, S, S) tensor of raw RGB pixels 0..255, or
``float``, the same in [0, 1]; S is the training image size (stored in the checkpoint, 32 for CIFAR). Resize
and centre-crop other images to S first, as ``predict.py`` does. The batch dimension is dynamic. Output
(``--output``): ``probs`` (default, softmax, (N, K)) or ``logits``. The normalization is the training
set's mean/std from the checkpoint; class names are written beside the model (``<out>.classes.json``).
EMA checkpoints export the averaged weights (they are the checkpoint's ``state_dict``).
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from lit_vision.apps import add_checkpoint_arguments
from lit_vision.data.normalization import affine
from lit_vision.errors import exit_on_error
from lit_vision.models.checkpoint_io.safetensors_file import config_beside, write_model_card, write_weights
from lit_vision.models.inference.classifier_loading import load_classifier, read_checkpoint
from lit_vision.models.training.classifier import ImageClassifier
from lit_vision.progress import status

__all__ = ["ExportWrapper", "export", "export_weights", "main"]


class ExportWrapper(nn.Module):
    """Raw pixels -> probabilities (or logits): scaling and normalization inside the graph.

    Args:
        model: the trained classifier (its ``input_mean``/``input_std`` buffers are copied in).
        input_kind: ``uint8`` (0..255) or ``float`` ([0, 1]).
        output: ``probs`` or ``logits``.
    """

    def __init__(
        self,
        model: ImageClassifier,
        input_kind: Literal["uint8", "float"] = "uint8",
        output: Literal["probs", "logits"] = "probs",
    ) -> None:
        super().__init__()
        self.backbone = model.backbone
        scale = 255.0 if input_kind == "uint8" else 1.0
        # (x / scale - mean) / std == x * a + b: one fused multiply-add in the graph
        a, b = affine(model.input_mean.cpu(), model.input_std.cpu(), scale)
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.probs = output == "probs"

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() * self.a + self.b  # (N, 3, S, S)
        logits = self.backbone(x)  # (N, K)
        return logits.softmax(-1) if self.probs else logits


def export_weights(ckpt: str | Path, out: str | Path | None = None, trusted: bool = False) -> Path:
    """Write ``<out>.safetensors`` and the model card ``<out>.md``; return the weights' path. The file is
    read back and its tensors compared with the checkpoint's before this returns."""
    model = load_classifier(ckpt, trusted)  # the checkpoint rebuilds (clear errors otherwise)
    checkpoint = read_checkpoint(ckpt, trusted)
    shared = {**checkpoint, "state_dict": model.state_dict()}
    path = Path(out) if out is not None else Path(ckpt).with_suffix(".safetensors")
    path = path.with_suffix(".safetensors")
    with status(f"Writing {path}"):
        write_weights(shared, path)
    again = load_classifier(path).state_dict()
    if again.keys() != shared["state_dict"].keys() or not all(
        torch.equal(again[k], v) for k, v in shared["state_dict"].items()
    ):
        raise ValueError(f"{path} does not read back to the checkpoint's weights.")
    write_model_card(
        path.with_suffix(".md"),
        path,
        shared,
        list(model.class_names),
        model.input_size,
        model.input_mean.flatten().tolist(),
        model.input_std.flatten().tolist(),
        source=ckpt,
        config=config_beside(ckpt),
    )
    return path


def export(
    ckpt: str | Path,
    fmt: Literal["onnx", "torchscript", "safetensors"],
    out: str | Path | None = None,
    input_kind: Literal["uint8", "float"] = "uint8",
    output: Literal["probs", "logits"] = "probs",
    trusted: bool = False,
) -> Path:
    """Write the exported model (and ``<out>.classes.json``; for ``safetensors`` the model card, see
    :func:`export_weights`); return its path. ``trusted``: allow a checkpoint with pickled objects (see
    ``lit_vision.models.inference.classifier_loading``)."""
    if fmt == "safetensors":
        return export_weights(ckpt, out, trusted)
    model = load_classifier(ckpt, trusted)
    model.backbone.to(memory_format=torch.contiguous_format)  # exporters want the default layout
    wrapper = ExportWrapper(model, input_kind, output).eval().requires_grad_(False)
    size = model.input_size
    dtype = torch.uint8 if input_kind == "uint8" else torch.float32
    example = (torch.rand(2, 3, size, size) * (255 if input_kind == "uint8" else 1)).to(dtype)
    path = Path(out) if out is not None else Path(ckpt).with_suffix(".onnx" if fmt == "onnx" else ".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings(), status(f"Exporting {ckpt} to {fmt} ({path})"):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        if fmt == "onnx":
            batch = torch.export.Dim("batch", min=1, max=65536)
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                input_names=["images"],
                output_names=[output],
                dynamic_shapes={"images": {0: batch}},
                opset_version=18,
            )
            program.save(str(path))
        elif fmt == "torchscript":
            scripted = torch.jit.trace(wrapper, example, check_trace=False)
            scripted.save(str(path))
        else:
            raise ValueError(f"Unknown format {fmt!r}: onnx or torchscript.")
    meta = {"classes": model.class_names, "input": input_kind, "input_size": size, "output": output}
    path.with_suffix(".classes.json").write_text(json.dumps(meta, indent=2))
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m lit_vision.export", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_checkpoint_arguments(parser)
    parser.add_argument("--format", choices=["onnx", "torchscript", "safetensors"], required=True)
    parser.add_argument("--out", default=None, help="output file (default: beside the checkpoint)")
    parser.add_argument("--input", choices=["uint8", "float"], default="uint8", help="input contract")
    parser.add_argument("--output", choices=["probs", "logits"], default="probs")
    args = parser.parse_args(argv)
    with exit_on_error(ValueError, FileNotFoundError, ImportError):
        path = export(args.ckpt, args.format, args.out, args.input, args.output, args.trust_checkpoint)
    if args.format == "safetensors":
        print(f"wrote {path} and its model card {path.with_suffix('.md')}")
    else:
        print(f"wrote {path} ({args.input} input, {args.output} output, dynamic batch)")
    return path


if __name__ == "__main__":
    main()
