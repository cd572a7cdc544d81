"""Cross-entropy that takes hard labels or soft (probability) targets, with label smoothing applied once.

Label smoothing (Szegedy et al., 2016) mixes the target with the uniform distribution:
``t' = (1 - eps) * t + eps / C``. ``F.cross_entropy`` applies it to hard labels and to class probabilities
(MixUp/CutMix targets) alike, so callers never smooth targets beforehand; this module adds the checks.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lit_vision.errors import ConfigError

__all__ = ["SoftTargetCrossEntropy"]


class SoftTargetCrossEntropy(nn.Module):
    """Mean cross-entropy over the batch.

    Args:
        label_smoothing: eps in [0, 1): weight of the uniform distribution in the target.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:  # built in ImageClassifier.__init__: refused before data loads
            raise ConfigError(
                "--model.label_smoothing must be in [0, 1) (the weight of the uniform distribution; 0.1 is "
                f"usual), got {label_smoothing}."
            )
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits`` (N, C); ``target`` int64 labels (N,) or probabilities (N, C) summing to 1."""
        if target.ndim != 1 and target.shape != logits.shape:
            raise ValueError(f"Soft targets {tuple(target.shape)} must match logits {tuple(logits.shape)}.")
        if target.is_floating_point():
            target = target.to(logits.dtype)
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
