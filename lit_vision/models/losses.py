"""Cross-entropy that takes hard labels or soft (probability) targets, with label smoothing applied once.

Label smoothing (Szegedy et al., 2016) mixes the target with the uniform distribution:
``t' = (1 - eps) * t + eps / C``. For hard labels this is exactly ``F.cross_entropy(label_smoothing=eps)``;
soft targets (MixUp/CutMix) get the same mixing here, so callers never smooth them beforehand.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SoftTargetCrossEntropy"]


class SoftTargetCrossEntropy(nn.Module):
    """Mean cross-entropy over the batch.

    Args:
        label_smoothing: eps in [0, 1): weight of the uniform distribution in the target.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits`` (N, C); ``target`` int64 labels (N,) or probabilities (N, C) summing to 1."""
        if target.ndim == 1:
            return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        if target.shape != logits.shape:
            raise ValueError(f"Soft targets {tuple(target.shape)} must match logits {tuple(logits.shape)}.")
        eps = self.label_smoothing
        target = target.float() * (1.0 - eps) + eps / logits.shape[-1]
        return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
