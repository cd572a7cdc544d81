"""Export: ONNX (onnxruntime) and TorchScript outputs match PyTorch within 1e-4 on real images."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REAL_CIFAR10
from PIL import Image

from lit_vision.export import main
from lit_vision.models import ImageClassifier, list_backbones
from lit_vision.models.inference.classifier_loading import load_classifier, save_classifier

ort = pytest.importorskip("onnxruntime")
REAL = REAL_CIFAR10


def real_images(n: int, tmp_path: Path) -> np.ndarray:
    """(n, 3, 32, 32) uint8: real CIFAR-10 JPEGs when available, else photos-like generated images."""
    files = sorted((REAL / "train").glob("*/*.jpg"))[::997][:n] if REAL.is_dir() else []
    if len(files) < n:  # no real data on this machine: smooth random images saved and re-read as JPEG
        warnings.warn(
            f"No CIFAR-10 JPEGs under {REAL}: export parity is checked on generated images instead. "
            "Point LIT_VISION_CIFAR10_DIR at a cifar10 folder (with train/<class>/*.jpg) to use real ones.",
            stacklevel=2,
        )
        rng = np.random.default_rng(0)
        files = []
        for i in range(n):
            img = np.kron(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
            Image.fromarray(img).save(tmp_path / f"{i}.jpg")
            files.append(tmp_path / f"{i}.jpg")
    return np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files])


def save_checkpoint(path: Path, backbone: str, images: np.ndarray, seed: int = 0) -> ImageClassifier:
    """A checkpoint as training writes it (non-trivial normalization statistics), of a model that reacts to
    its input: an untrained net gives nearly the same output for any image (BatchNorm's initial running
    statistics squash the features), which would hide an export that scales its input wrongly. So the
    BatchNorm statistics are those of ``images`` (one cumulative pass) and the classifier is scaled up."""
    torch.manual_seed(seed)
    model = ImageClassifier(backbone, num_classes=10)
    model.input_mean.copy_(torch.tensor([0.49, 0.48, 0.45]))
    model.input_std.copy_(torch.tensor([0.25, 0.24, 0.26]))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
    with torch.no_grad():
        model.train()(model.normalize(torch.from_numpy(images).float() / 255.0))
        classifier = model.backbone.get_classifier()
        classifier.weight.mul_(20.0)
    model.eval()
    save_classifier(model, path)
    return model


def assert_reacts(outputs: np.ndarray, atol: float) -> None:
    """The outputs of different images differ by far more than the comparison's tolerance."""
    spread = float(np.ptp(outputs, axis=0).max())
    assert spread > 100 * atol, f"outputs barely depend on the input (spread {spread:.2e})"


def reference(ckpt: Path, images: np.ndarray, output: str = "probs") -> np.ndarray:
    model = load_classifier(ckpt)
    x = torch.from_numpy(images).float() / 255.0
    x = (x - model.input_mean.view(1, 3, 1, 1)) / model.input_std.view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model(x)
    return (logits.softmax(-1) if output == "probs" else logits).numpy()


def run_exported(path: Path, fmt: str, images: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        return ort.InferenceSession(str(path)).run(None, {"images": images})[0]
    with torch.no_grad():
        return torch.jit.load(str(path))(torch.from_numpy(images)).numpy()


def check(backbone: str, fmt: str, tmp_path: Path, batches: tuple[int, ...] = (1, 7)) -> None:
    ckpt = tmp_path / f"{backbone}.ckpt"
    images = real_images(max(max(batches), 7), tmp_path)
    save_checkpoint(ckpt, backbone, images)
    out = main(["--ckpt", str(ckpt), "--format", fmt, "--out", str(tmp_path / f"{backbone}.{fmt}")])
    assert_reacts(reference(ckpt, images), atol=1e-4)
    for n in batches:  # dynamic batch dimension
        np.testing.assert_allclose(
            run_exported(out, fmt, images[:n]), reference(ckpt, images[:n]), atol=1e-4, rtol=0
        )
    meta = json.loads(out.with_suffix(".classes.json").read_text())
    assert meta["input"] == "uint8" and len(meta["classes"]) == 10 and meta["input_size"] == 32


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("backbone", ["compact_cifar", "gapawarenet"])
def test_export_matches_pytorch(backbone: str, fmt: str, tmp_path: Path) -> None:
    check(backbone, fmt, tmp_path)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize(
    ("input_kind", "output"), [("float", "logits"), ("float", "probs"), ("uint8", "logits")]
)
def test_input_and_output_contracts(fmt: str, input_kind: str, output: str, tmp_path: Path) -> None:
    ckpt = tmp_path / "m.ckpt"
    images = real_images(7, tmp_path)
    save_checkpoint(ckpt, "compact_cifar", images)
    out = main(["--ckpt", str(ckpt), "--format", fmt, "--input", input_kind, "--output", output])
    assert out == ckpt.with_suffix(".onnx" if fmt == "onnx" else ".pt")
    expected = reference(ckpt, images, output)
    assert_reacts(expected, atol=1e-4)
    fed = images.astype(np.float32) / 255.0 if input_kind == "float" else images
    np.testing.assert_allclose(run_exported(out, fmt, fed), expected, atol=1e-4, rtol=0)


def test_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--ckpt", str(tmp_path / "none.ckpt"), "--format", "onnx"])
    assert "none.ckpt does not exist" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize(
    "backbone", [b for b in list_backbones() if not b.startswith(("torchvision/", "timm/"))]
)
def test_every_backbone_exports(backbone: str, fmt: str, tmp_path: Path) -> None:
    check(backbone, fmt, tmp_path, batches=(3,))
