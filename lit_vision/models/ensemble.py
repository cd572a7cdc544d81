"""``Ensemble``: one or more trained ``ImageClassifier`` checkpoints predicting together on raw uint8 images.

The ensemble's probability is the mean of its members' probabilities (each member normalizes the uint8
batch with the mean/std stored in its own checkpoint). With ``tta`` every member averages its probabilities
over the flipped/translated views of ``TestTimeAugmentation`` first. Checkpoints written with the EMA
callback hold the averaged weights in ``state_dict``, so they are what gets loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lit_vision.callbacks.tta import TestTimeAugmentation
from lit_vision.models.classifier import ImageClassifier

__all__ = ["Ensemble", "load_classifier", "save_classifier"]


def save_classifier(model: ImageClassifier, path: str | Path) -> Path:
    """Write ``model`` as a checkpoint ``load_classifier`` and ``predict.py`` read, without a Trainer (a model
    trained by hand, or built for a benchmark): weights, hyperparameters, normalization and input size."""
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # what training adds: the input size
    path = Path(path)
    torch.save(checkpoint, path)
    return path


def load_classifier(path: str | Path) -> ImageClassifier:
    """Load a checkpoint on CPU with a clear error when it is not one of ours or names an unknown backbone."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    hparams = checkpoint.get("hyper_parameters", {})
    if "state_dict" not in checkpoint or "backbone" not in hparams:
        raise ValueError(f"{path} is not a lit_vision ImageClassifier checkpoint (no model hyperparameters).")
    try:
        model = ImageClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except ValueError as err:  # create_backbone: unknown name, with suggestions
        raise ValueError(f"Cannot rebuild the model of {path}: {err}") from err
    return model.eval()


class Ensemble(L.LightningModule):
    """Mean probability of several classifiers (same classes, same input size) on uint8 batches.

    Args:
        members: the classifiers (``load_classifier``).
        tta: average each member over ``TestTimeAugmentation``'s views.
    """

    def __init__(self, members: Sequence[ImageClassifier], tta: bool = False) -> None:
        super().__init__()
        if not members:
            raise ValueError("An ensemble needs at least one checkpoint.")
        first = members[0]
        for m in members[1:]:
            if list(m.class_names) != list(first.class_names):
                raise ValueError(
                    "Checkpoints predict different classes: "
                    f"{first.class_names[:5]}... vs {m.class_names[:5]}..."
                )
            if m.input_size != first.input_size:
                raise ValueError(
                    "Checkpoints were trained at different image sizes; ensemble them separately."
                )
        self.members = nn.ModuleList(members)
        self.class_names = list(first.class_names)
        self.input_size = first.input_size
        self.tta = TestTimeAugmentation() if tta else None

    def probabilities(self, images: Tensor) -> Tensor:
        """uint8 (N, 3, H, W) -> mean class probabilities (N, K), float32."""
        x = images.float().div_(255.0)
        total = None
        for m in self.members:
            xn = m.normalize(x)
            if m.hparams.get("channels_last"):
                xn = xn.contiguous(memory_format=torch.channels_last)
            probs = self.tta.logits(m, xn).exp() if self.tta is not None else m(xn).float().softmax(-1)
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(self.members)

    def forward(self, images: Tensor) -> Tensor:
        return self.probabilities(images)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.probabilities(batch[0])
