"""Test-time augmentation: identity-only is exactly no TTA; flip TTA is a no-op on a flip-invariant model;
logits averaged on request (the airbench94 recipe's TTA)."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import quiet_trainer
from torch import nn

from lit_vision.callbacks import TestTimeAugmentation as TTACallback  # not collected as a test class
from lit_vision.callbacks import TTAView
from lit_vision.data import ImageDataModule
from lit_vision.models import ImageClassifier


class FlipInvariant(nn.Module):
    """logits(x) == logits(flip(x)) by construction."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 32, num_classes)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        # pooled over W only: the row structure survives, so vertical shifts still change the answer
        return self.fc(torch.relu(self.conv(x)).mean(3).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.branch(x.flip(3))  # a + b == b + a exactly in floating point


def images(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_views_and_weights() -> None:
    views = TTACallback(hflip=True, translate=2, translate_weight=0.5).views
    assert len(views) == 6
    assert sum(v.weight for v in views) == 1.0
    assert sum(v.weight for v in views if v.dy or v.dx) == 0.5
    assert len(TTACallback(hflip=False, translate=0).views) == 1


def test_translation_view_moves_content() -> None:
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 5] = 1.0
    assert TTAView(False, 2, 2, 1.0).apply(x)[0, 0, 10, 7] == 1.0
    assert TTAView(False, -2, -2, 1.0).apply(x)[0, 0, 6, 3] == 1.0
    assert TTAView(True, 0, 0, 1.0).apply(x)[0, 0, 8, 10] == 1.0


def test_identity_only_tta_equals_no_tta_exactly() -> None:
    model = ImageClassifier("compact_cifar", num_classes=3).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(TTACallback(hflip=False, translate=0).logits(model, x), model(x))


def test_flip_tta_is_no_op_on_flip_invariant_model() -> None:
    model = FlipInvariant().eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), model(x.flip(3)))
        tta = TTACallback(hflip=True, translate=0).logits(model, x)
        torch.testing.assert_close(tta.softmax(-1), model(x).softmax(-1))
        # ...whereas translated views do change this model's answer
        shifted = TTACallback(hflip=True, translate=2).logits(model, x)
        assert not torch.allclose(shifted.softmax(-1), model(x).softmax(-1), atol=1e-4)


def test_chunking_does_not_change_result_and_probs_are_weighted_mean() -> None:
    model = FlipInvariant().eval()
    x = images(5)
    tta = TTACallback(hflip=True, translate=1, translate_weight=0.4)
    with torch.no_grad():
        whole = tta.logits(model, x)
        tta.max_batch = 7  # 6 views x 5 images = 30 images in 5 chunks
        chunked = tta.logits(model, x)
        expected = sum(v.weight * model(v.apply(x)).softmax(-1) for v in tta.views)
    torch.testing.assert_close(whole, chunked)
    torch.testing.assert_close(whole.exp(), expected)


def test_tta_can_average_logits() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    x = torch.randn(3, 3, 8, 8)
    tta = TTACallback(translate=1, translate_weight=0.5, average="logits")
    views = tta.views
    assert [v.weight for v in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    with torch.no_grad():
        expected = sum(v.weight * model(v.apply(x)) for v in views)
        torch.testing.assert_close(tta.logits(model, x), expected)
        probs = TTACallback(translate=1, translate_weight=0.5).logits(model, x)
    assert not torch.allclose(probs, expected)  # the default still averages probabilities


def test_active_in_test_and_predict_only(tiny_folder: Path) -> None:
    model = ImageClassifier("compact_cifar", num_classes=3)
    tta = TTACallback()
    calls: list[str] = []
    logits = tta.logits

    def counting(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        calls.append(m.trainer.state.stage.value)
        return logits(m, x)

    tta.logits = counting
    dm = ImageDataModule("imagefolder", tiny_folder, batch_size=8, val_size=12)
    trainer = quiet_trainer(max_epochs=1, callbacks=[tta])
    trainer.fit(model, datamodule=dm)
    assert calls == []  # training and validation: plain forward
    trainer.test(model, datamodule=dm, verbose=False)
    assert calls and set(calls) == {"test"}
    assert model.eval_forward is None  # removed after the stage
    probs = torch.cat(trainer.predict(model, datamodule=dm))
    assert set(calls) == {"test", "predict"}
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(probs)))
