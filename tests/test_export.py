"""Export: ONNX (onnxruntime) and TorchScript outputs match PyTorch within 1e-4 on real images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_vision.export import main
from lit_vision.models import ImageClassifier, list_backbones
from lit_vision.models.checkpoints import load_classifier, save_classifier

ort = pytest.importorskip("onnxruntime")
REAL = Path(
    os.environ.get("LIT_VISION_CIFAR10_DIR", Path(__file__).resolve().parents[2] / "shared/data/cifar10")
)


def real_images(n: int, tmp_path: Path) -> np.ndarray:
    """(n, 3, 32, 32) uint8: real CIFAR-10 JPEGs when available, else photos-like generated images."""
    files = sorted((REAL / "train").glob("*/*.jpg"))[::997][:n] if REAL.is_dir() else []
    if len(files) < n:  # no real data on this machine: smooth random images saved and re-read as JPEG
        rng = np.random.default_rng(0)
        files = []
        for i in range(n):
            img = np.kron(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
            Image.fromarray(img).save(tmp_path / f"{i}.jpg")
            files.append(tmp_path / f"{i}.jpg")
    return np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files])


def save_checkpoint(path: Path, backbone: str, seed: int = 0) -> ImageClassifier:
    """A checkpoint as training writes it (non-trivial normalization statistics)."""
    torch.manual_seed(seed)
    model = ImageClassifier(backbone, num_classes=10)
    model.input_mean.copy_(torch.tensor([0.49, 0.48, 0.45]))
    model.input_std.copy_(torch.tensor([0.25, 0.24, 0.26]))
    save_classifier(model, path)
    return model


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
    save_checkpoint(ckpt, backbone)
    out = main(["--ckpt", str(ckpt), "--format", fmt, "--out", str(tmp_path / f"{backbone}.{fmt}")])
    images = real_images(max(batches), tmp_path)
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


def test_float_input_and_logits_output(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(ckpt, "compact_cifar")
    out = main(["--ckpt", str(ckpt), "--format", "onnx", "--input", "float", "--output", "logits"])
    assert out == ckpt.with_suffix(".onnx")
    images = real_images(3, tmp_path)
    got = run_exported(out, "onnx", images.astype(np.float32) / 255.0)
    np.testing.assert_allclose(got, reference(ckpt, images, "logits"), atol=1e-4, rtol=0)


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
