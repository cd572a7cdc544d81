"""``Ensemble``: one or more trained ``ImageClassifier`` checkpoints predicting together on raw uint8 images.

The ensemble's probability is the mean of its members' probabilities (each member normalizes the uint8
batch with the mean/std stored in its own checkpoint). With ``tta`` every member averages its probabilities
over the flipped/translated views of ``TestTimeViews`` (what the TTA callback uses) first. Checkpoints
written with the EMA callback hold the averaged weights in ``state_dict``, so they are what gets loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lit_vision.models.inference.test_time_views import TestTimeViews
from lit_vision.models.training.classifier import ImageClassifier

__all__ = ["Ensemble"]


class Ensemble(L.LightningModule):
    """Mean probability of several classifiers (same classes, same input size) on uint8 batches.

    Args:
        members: the classifiers (``lit_vision.models.inference.classifier_loading.load_classifier``).
        tta: average each member over the default ``TestTimeViews``.
        tta_max_batch: most images per forward pass under ``tta`` (views x batch is chunked to it).
        tta_threshold: confidence-adaptive TTA: the views run only for images whose plain prediction (the
            ensemble's highest mean probability) is below this; ``None`` or ``1.0``: every image (full
            TTA), ``0.0``: none (plain prediction). ``tta_images`` counts the images that got the views.
    """

    def __init__(
        self,
        members: Sequence[ImageClassifier],
        tta: bool = False,
        tta_max_batch: int = 256,
        tta_threshold: float | None = None,
    ) -> None:
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
        if tta_threshold is not None and not 0.0 <= tta_threshold <= 1.0:
            raise ValueError(f"tta_threshold is a probability in [0, 1], got {tta_threshold}")
        if tta_threshold is not None and not tta:
            raise ValueError("tta_threshold chooses which images get TTA: it needs tta on.")
        self.tta = TestTimeViews(max_batch=tta_max_batch) if tta else None
        self.tta_threshold = tta_threshold
        self.tta_images = 0

    def probabilities(self, images: Tensor) -> Tensor:
        """uint8 (N, 3, H, W) -> mean class probabilities (N, K), float32."""
        if self.tta is None:
            return self._mean_probabilities(images, tta=False)
        if self.tta_threshold is None or self.tta_threshold >= 1.0:
            self.tta_images += len(images)
            return self._mean_probabilities(images, tta=True)
        probs = self._mean_probabilities(images, tta=False)
        unsure = probs.max(-1).values < self.tta_threshold  # (N,) bool
        picked = unsure.nonzero().squeeze(1)  # one host sync per batch: the subset's size decides the work
        if len(picked):
            self.tta_images += len(picked)
            probs[picked] = self._mean_probabilities(images[picked], tta=True)
        return probs

    def _mean_probabilities(self, images: Tensor, tta: bool) -> Tensor:
        x = images.float().div_(255.0)
        total = None
        for m in self.members:
            # normalized in fp32, then cast to the member's weight dtype (bf16-true/16-true predict runs)
            xn = m.normalize(x).to(next(m.parameters()).dtype)
            if m.hparams.get("channels_last"):
                xn = xn.contiguous(memory_format=torch.channels_last)
            probs = self.tta.logits(m, xn).exp() if tta and self.tta else m(xn).float().softmax(-1)
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(self.members)

    def on_predict_start(self) -> None:
        self.tta_images = 0

    def on_predict_end(self) -> None:
        # every process counted its own shard: the summary wants the run's total
        count = torch.tensor(self.tta_images, device=self.device)
        self.tta_images = int(self.trainer.strategy.reduce(count, reduce_op="sum"))

    def forward(self, images: Tensor) -> Tensor:
        return self.probabilities(images)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.probabilities(batch[0])
