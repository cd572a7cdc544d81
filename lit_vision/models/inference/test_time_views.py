"""Test-time views and their average (airbench, Keller Jordan 2024, arXiv:2404.00498): the math shared by the
``TestTimeAugmentation`` callback (``test``/``predict`` of a run) and ``Ensemble`` (``predict.py --tta``).

Views: the identity, the horizontal flip, and each of them translated by ``+-translate`` pixels along both
axes (reflect padded): up to 6 views. All views of a batch go through the model as one batch (chunked to
``max_batch`` images to bound memory); softmax probabilities (or, as airbench does, logits) are averaged
with weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_vision.errors import ConfigError

__all__ = ["TTAView", "TestTimeViews"]


@dataclass(frozen=True)
class TTAView:
    """One view: optional horizontal flip, then a shift by (dy, dx) pixels; ``weight`` in the average."""

    flip: bool
    dy: int
    dx: int
    weight: float

    def apply(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        if self.flip:
            x = x.flip(3)
        if self.dy or self.dx:
            k = max(abs(self.dy), abs(self.dx))
            h, w = x.shape[-2:]
            padded = F.pad(x, (k, k, k, k), mode="reflect")
            # content moves by (+dy, +dx): the output pixel (i, j) reads input (i - dy, j - dx)
            x = padded[..., k - self.dy : k - self.dy + h, k - self.dx : k - self.dx + w]
        return x


class TestTimeViews:
    """The views of test-time augmentation and their weighted average.

    Args:
        hflip: add the horizontally flipped view.
        translate: shift in pixels for the translated views (``+translate`` and ``-translate`` on both axes,
            of every untranslated view); 0: no translated views.
        translate_weight: total weight of the translated views (the untranslated ones share the rest).
        max_batch: most images per forward pass (views x batch is chunked to this): small chunks keep
            activations in CPU caches (docs/results.md, the speed table's TTA row); raise it on GPU.
        average: what is averaged over the views: ``probs`` (softmax probabilities; the result is their
            log) or ``logits`` (airbench's TTA).
    """

    #: how error messages name the arguments: plain here (``Ensemble``, ``predict.py`` map their own flags
    #: onto them), as CLI options in the callback
    _option_prefix = ""

    def __init__(
        self,
        hflip: bool = True,
        translate: int = 2,
        translate_weight: float = 0.5,
        max_batch: int = 256,
        average: Literal["probs", "logits"] = "probs",
    ) -> None:
        option = self._option_prefix
        if not translate >= 0:
            raise ConfigError(
                f"{option}translate must be >= 0 (pixels; 0: no translated views), got {translate}."
            )
        if not max_batch >= 1:
            raise ConfigError(f"{option}max_batch must be >= 1 (images per forward pass), got {max_batch}.")
        if not 0.0 <= translate_weight < 1.0:
            raise ConfigError(
                f"{option}translate_weight must be in [0, 1) (the untranslated views keep the rest), "
                f"got {translate_weight}."
            )
        if average not in ("probs", "logits"):
            raise ConfigError(f"{option}average must be probs or logits, got {average!r}.")
        self.average = average
        self.hflip, self.translate = hflip, translate
        self.translate_weight = translate_weight if translate > 0 else 0.0
        self.max_batch = max_batch

    @property
    def views(self) -> list[TTAView]:
        flips = [False, True] if self.hflip else [False]
        base_w = (1.0 - self.translate_weight) / len(flips)
        views = [TTAView(f, 0, 0, base_w) for f in flips]
        if self.translate:
            t, shift_w = self.translate, self.translate_weight / (2 * len(flips))
            views += [TTAView(f, s * t, s * t, shift_w) for f in flips for s in (1, -1)]
        return views

    def logits(self, model: torch.nn.Module, x: Tensor) -> Tensor:
        """Log of the weighted mean of the views' softmax probabilities (N, K), or the weighted mean of their
        logits; the raw logits when the only view is the identity, so identity-only TTA is exactly no TTA."""
        views = self.views
        if len(views) == 1:
            return model(x)
        n = x.shape[0]
        stacked = torch.cat([v.apply(x) for v in views])  # (V*N, C, H, W), view-major
        logits = torch.cat([model(chunk) for chunk in stacked.split(self.max_batch)]).float()
        per_view = logits.view(len(views), n, -1)  # (V, N, K)
        if self.average == "probs":
            per_view = per_view.softmax(-1)
        # Python-float weights: no (V,) weight tensor copied to the device for every batch
        mean = sum(v.weight * t for v, t in zip(views, per_view.unbind(0), strict=True))
        if self.average == "logits":
            return mean
        return mean.clamp_min(torch.finfo(torch.float32).tiny).log()
