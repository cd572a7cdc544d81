"""Explanations: on a task where only one region carries the class, every method's heatmap lands there."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lit_vision.explain import HEATMAP_METHODS, feature_layers, heatmaps, main, top_activations
from lit_vision.models import ImageClassifier
from lit_vision.models.inference.classifier_loading import save_classifier
from lit_vision.models.zoo.backbone import Backbone

COLORS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], np.uint8)
SIGNAL = (slice(2, 14), slice(2, 14))  # rows, cols of the square that carries the class (top-left)


def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 32, 32) uint8 noise with a class-coloured square at SIGNAL; labels (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(COLORS), n)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    for img, y in zip(images, labels, strict=True):
        img[SIGNAL] = np.clip(COLORS[y] + rng.integers(-20, 21, (12, 12, 3)), 0, 255)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


class TinyCAMNet(Backbone):
    """Four 3x3 convs, two 2x pools: an 8x8 final map whose cells see ~22 pixels, so the evidence stays
    where it is in the image (the zoo's CIFAR nets end at 4x4 with whole-image receptive fields)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_features = 64
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.fc = nn.Linear(64, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, 64, 8, 8)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = features.mean((2, 3))
        return pooled if pre_logits else self.fc(pooled)


def fit_toy(backbone: Callable[[], nn.Module] | str) -> ImageClassifier:
    """Train on the toy task (plain loop, a few seconds) until it is solved.

    ``backbone``: a registered name or a factory, so the initial weights come from the seed below and not
    from whatever the tests before this one drew from torch's RNG.
    """
    torch.manual_seed(0)
    backbone = backbone if isinstance(backbone, str) else backbone()
    model = ImageClassifier(backbone, num_classes=len(COLORS), class_names=["r", "g", "b", "y"])
    model.input_mean.fill_(0.5)
    model.input_std.fill_(0.29)
    images, labels = make_images(512, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        idx = torch.randint(0, len(images), (64,))
        loss = F.cross_entropy(model((images[idx].float() / 255 - 0.5) / 0.29), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test_x, test_y = make_images(64, seed=1)
    with torch.no_grad():
        acc = (model((test_x.float() / 255 - 0.5) / 0.29).argmax(-1) == test_y).float().mean()
    assert acc > 0.95, f"the toy task must be solved for the heatmap test to mean anything ({acc:.2f})"
    return model


@pytest.fixture(scope="module")
def toy_model() -> ImageClassifier:
    return fit_toy(lambda: TinyCAMNet(len(COLORS)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registered backbone trained on the toy task, saved as training saves it (for the CLI)."""
    model = fit_toy("compact_cifar")
    return save_classifier(model, tmp_path_factory.mktemp("explain") / "toy.ckpt")


#: each method's share of its hottest pixels on the signal must reach this: a little below what it
#: measures on the seeded toy model (docs/inference.md, "python -m lit_vision.explain"), so a regression
#: that moves the heat off the signal fails, not only one that falls to twice chance (0.28)
FLOORS = {"gradcam": 0.8, "gradcam++": 0.8, "cam": 0.8, "occlusion": 0.6, "saliency": 0.33}


@pytest.mark.parametrize("method", HEATMAP_METHODS)
def test_heatmap_mass_concentrates_on_the_signal(toy_model: ImageClassifier, method: str) -> None:
    model = toy_model
    images, labels = make_images(16, seed=2)
    maps, explained = heatmaps(model, images, method, classes=labels, patch=8, stride=2)
    assert maps.shape == (16, 32, 32) and float(maps.min()) >= 0 and float(maps.max()) <= 1 + 1e-6
    assert torch.equal(explained, labels)
    # Of the 144 hottest pixels (the region's size), how many lie in the 12x12 region? Chance: 14%. (Total
    # heat inside is a poorer measure for vanilla gradients, which are noisy everywhere: Smilkov et al.,
    # 2017; they put 18% of their mass inside, but 36% of their hottest pixels.)
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[SIGNAL] = True
    hottest = maps.flatten(1).topk(int(region.sum()), dim=1).indices  # (16, 144)
    hit_rate = float(region.flatten()[hottest].float().mean())
    chance = float(region.float().mean())
    # docs/inference.md quotes these figures (`pytest tests/test_explain.py -k concentrates -rP`)
    print(f"{method}: {hit_rate:.2f} of the hottest pixels on the signal (chance {chance:.2f})")
    assert hit_rate >= FLOORS[method], f"{method}: {hit_rate:.2f} of the hottest pixels on the signal"


def test_cli_writes_overlays_and_filters(checkpoint: Path, tmp_path: Path) -> None:
    images, _ = make_images(3, seed=3)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_bytes(b"")
    written = main(
        [
            str(tmp_path),
            "--ckpt",
            str(checkpoint),
            "--method",
            "gradcam",
            "--out",
            str(tmp_path / "o"),
            "--filters",
        ]
    )
    assert len(written) == 4 and (tmp_path / "o" / "first_layer_filters.png").is_file()
    overlay = Image.open(written[0])
    assert overlay.size == (128, 128) and overlay.mode == "RGB"
    # the one inference loop's CSV: every input, the broken one with its error, and each overlay's class
    # is the CSV's prediction
    with open(tmp_path / "o" / "predictions.csv", newline="") as f:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["broken.png", "img0.png", "img1.png", "img2.png"]
    assert rows["broken.png"]["error"] and not rows["broken.png"]["prediction"]
    for path in written[:3]:
        index, stem = path.stem.split("_")[:2]
        row = rows[f"{stem}.png"]
        assert int(row["index"]) == int(index) and path.stem.endswith(f"_gradcam_{row['prediction']}")


def test_cam_refuses_heads_it_cannot_explain(tmp_path: Path) -> None:
    model = ImageClassifier("vit_tiny", num_classes=4).eval()
    with pytest.raises(ValueError, match=r"CAM needs|CAM is exact only"):
        heatmaps(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "cam")


def test_activation_maps_have_the_layers_channels(toy_model: ImageClassifier) -> None:
    """feature_layers lists every feature-map layer with its shape; top_activations returns min(k, C) maps
    of that layer per image, strongest mean first, and each map is the layer's own output channel."""
    layers = dict(feature_layers(toy_model))
    assert layers["features.0"] == (16, 32, 32) and layers["features.8"] == (64, 8, 8)
    assert "fc" not in layers  # (N, K) logits: not a feature map
    images, _ = make_images(4, seed=4)
    maps, channels, means, probs = top_activations(toy_model, images, "features.0", k=100)
    assert maps.shape == (4, 16, 32, 32) and channels.shape == means.shape == (4, 16)
    assert all(sorted(c.tolist()) == list(range(16)) for c in channels)  # every channel, once
    assert torch.all(means[:, :-1] >= means[:, 1:])
    captured = toy_model.backbone.features[0](toy_model.normalize(images.float() / 255.0))
    torch.testing.assert_close(maps, captured.gather(1, channels[:, :, None, None].expand(-1, -1, 32, 32)))
    torch.testing.assert_close(means, maps.mean((2, 3)))
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    top3, _, _, _ = top_activations(toy_model, images, "features.8", k=3)
    assert top3.shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"not a \(N, C, h, w\) feature map"):
        top_activations(toy_model, images, "fc")
    with pytest.raises(ValueError, match="No layer 'nope'"):
        top_activations(toy_model, images, "nope")


def test_cli_lists_layers_and_writes_activation_rows(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--ckpt", str(checkpoint), "--list-layers"])
    listed = capsys.readouterr().out.splitlines()
    assert listed and all(" x " in line for line in listed)
    name = listed[0].split()[0]  # the first feature-map layer of compact_cifar
    channels = int(listed[0].split()[1])
    images, _ = make_images(2, seed=5)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f"img{i}.png")
    args = ["--ckpt", str(checkpoint), "--method", "activations", "--layer", name, "--top-k", "4"]
    written = main([str(tmp_path), *args, "--out", str(tmp_path / "o")])
    assert len(written) == 2
    row = Image.open(written[0])
    k = min(4, channels)
    assert row.size == (4 * ((k + 1) * 33 - 1), 4 * 32)  # the image and k maps, 1-pixel gaps, 4x scale
    meta = json.loads((tmp_path / "o" / "activations.json").read_text())
    assert meta["layer"] == name and len(meta["images"][written[0].name]["channels"]) == k
    with pytest.raises(SystemExit):  # activations without a layer
        main([str(tmp_path), "--ckpt", str(checkpoint), "--method", "activations", "--out", str(tmp_path)])
