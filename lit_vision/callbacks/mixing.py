"""MixUp and CutMix on whole batches, on the device, as a training-batch transform.

MixUp (Zhang et al., 2018, arXiv:1710.09412): ``x = lam * x_i + (1 - lam) * x_j`` with ``lam ~ Beta(a, a)``.
CutMix (Yun et al., 2019, arXiv:1905.04899): paste a box of ``x_j`` into ``x_i``; the box's side is
``sqrt(1 - lam)`` of the image's and ``lam`` is then corrected to the area actually kept after clipping at
the border. Targets become ``lam * onehot(y_i) + (1 - lam) * onehot(y_j)``; label smoothing is applied once,
later, by the module's loss. Options follow timm's ``Mixup``.

Partners ``j`` come from a random permutation of the batch (not timm's batch flip), so odd batch sizes need
no special case. Random draws use a per-rank generator seeded from the global seed and the rank: DDP ranks
draw different lambdas and boxes, and a seeded run is reproducible.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_vision.errors import ConfigError
from lit_vision.seeding import run_seed

__all__ = ["MixUpCutMix"]


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """A host tensor on ``device``; to CUDA through pinned memory, so the host does not wait for the copy
    (the caching host allocator keeps the pinned block until the copy has run)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class MixUpCutMix(L.Callback):
    """MixUp/CutMix on every training batch (validation and test never mix).

    Args:
        mixup_alpha: Beta(alpha, alpha) for MixUp's lambda; 0 disables MixUp.
        cutmix_alpha: Beta(alpha, alpha) for CutMix's lambda; 0 disables CutMix.
        prob: probability that a batch (``mode=batch``) or a sample (``mode=elem``) is mixed at all.
        switch_prob: probability of CutMix instead of MixUp when both are enabled.
        mode: ``batch``: one lambda (and one box) per batch; ``elem``: one per sample.
        stop_epoch: epochs from this one on (0-based) train on clean images: the last epochs of a short
            schedule see the real data distribution. ``None``: mix until the end.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: Literal["batch", "elem"] = "batch",
        stop_epoch: int | None = None,
    ) -> None:
        # Refused here, when the CLI builds the callback, before any data is loaded.
        for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not alpha >= 0:
                raise ConfigError(f"--mixing.init_args.{name} must be >= 0 (0 disables it), got {alpha}.")
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ConfigError(
                "--mixing.init_args.mixup_alpha or --mixing.init_args.cutmix_alpha must be > 0: with both 0 "
                "nothing is mixed (leave --mixing unset instead)."
            )
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"--mixing.init_args.{name} is a probability in [0, 1], got {value}.")
        if mode not in ("batch", "elem"):
            raise ConfigError(f"--mixing.init_args.mode must be batch or elem, got {mode!r}.")
        if stop_epoch is not None and not stop_epoch >= 0:
            raise ConfigError(
                f"--mixing.init_args.stop_epoch must be >= 0 (0-based), or unset to mix until the end, "
                f"got {stop_epoch}."
            )
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.mode, self.stop_epoch = prob, switch_prob, mode, stop_epoch
        self.rng = np.random.default_rng(0)

    # ------------------------------------------------------------------ wiring
    def seed(self, seed: int, rank: int = 0, epoch: int = 0) -> None:
        """Reseed the generator from the global seed, the process rank and the epoch."""
        self.rng = np.random.default_rng([seed, rank, epoch])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Per epoch: an epoch's draws do not depend on how the run got there (exact resume).
        self.seed(run_seed(), trainer.global_rank, trainer.current_epoch)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not hasattr(pl_module, "add_train_batch_transform"):
            raise TypeError("MixUpCutMix needs a lit_vision ImageClassifier (add_train_batch_transform).")
        self.seed(run_seed(), trainer.global_rank)
        pl_module.add_train_batch_transform(self._transform, order=0)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and hasattr(pl_module, "remove_train_batch_transform"):
            pl_module.remove_train_batch_transform(self._transform)

    def _transform(
        self, module: L.LightningModule, x: Tensor, y: Tensor, batch_idx: int
    ) -> tuple[Tensor, Tensor]:
        if self.stop_epoch is not None and module.trainer.current_epoch >= self.stop_epoch:
            return x, y
        return self.mix(x, y, module.num_classes)

    # ------------------------------------------------------------------ the math
    def _draw_lam(self, cutmix: np.ndarray) -> np.ndarray:
        lam = np.ones(cutmix.shape, dtype=np.float64)
        if self.mixup_alpha > 0:
            mix = self.rng.beta(self.mixup_alpha, self.mixup_alpha, size=cutmix.shape)
            lam = np.where(~cutmix, mix, lam)
        if self.cutmix_alpha > 0:
            cut = self.rng.beta(self.cutmix_alpha, self.cutmix_alpha, size=cutmix.shape)
            lam = np.where(cutmix, cut, lam)
        return lam

    def _boxes(self, lam: np.ndarray, h: int, w: int) -> np.ndarray:
        """Boxes (n, 4) = (y0, y1, x0, x1) of side ``sqrt(1 - lam)``, uniform centre, clipped to the image."""
        ratio = np.sqrt(1.0 - lam)
        ch, cw = (h * ratio).astype(int), (w * ratio).astype(int)
        cy = self.rng.integers(0, h, size=lam.shape)
        cx = self.rng.integers(0, w, size=lam.shape)
        y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch - ch // 2, 0, h)
        x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw - cw // 2, 0, w)
        return np.stack([y0, y1, x0, x1], axis=-1)

    def draw(self, n: int, h: int, w: int) -> dict[str, np.ndarray]:
        """Random parameters for a batch of ``n`` images of ``h`` x ``w``: partner permutation, which
        samples are mixed, which use CutMix, their boxes and their (area-corrected) lambdas."""
        size = 1 if self.mode == "batch" else n
        apply = self.rng.random(size) < self.prob
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = self.rng.random(size) < self.switch_prob
        else:
            cutmix = np.full(size, self.cutmix_alpha > 0)
        lam = self._draw_lam(cutmix)
        boxes = self._boxes(lam, h, w)
        area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
        lam = np.where(cutmix, 1.0 - area / (h * w), lam)  # the share of x_i actually kept
        lam = np.where(apply, lam, 1.0)
        if self.mode == "batch":
            apply, cutmix, lam, boxes = (np.repeat(a, n, axis=0) for a in (apply, cutmix, lam, boxes))
        return {
            "perm": self.rng.permutation(n),
            "apply": apply,
            "cutmix": cutmix & apply,
            "lam": lam,
            "boxes": boxes,
        }

    def mix(self, x: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
        """Mix a batch: ``x`` (N, C, H, W), ``y`` labels (N,) or probabilities (N, K) -> (x, soft targets)."""
        n, _, h, w = x.shape
        p = self.draw(n, h, w)
        if not p["apply"].any():
            return x, y
        # The draws come from a host RNG (seeded per epoch and rank: exact resumes). They travel in two
        # blocks (integers, lambdas), each copied from pinned memory without blocking the host (a copy from
        # pageable memory makes the host wait: a GPU sync per tensor).
        ints = np.concatenate([p["perm"][:, None], p["cutmix"][:, None], p["boxes"]], axis=1)  # (N, 6)
        ints_d, lam = (
            _to_device(torch.from_numpy(a), x.device)
            for a in (ints.astype(np.int64), p["lam"].astype(np.float32))
        )
        perm, cut, boxes = ints_d[:, 0], ints_d[:, 1].bool(), ints_d[:, 2:]  # (N,), (N,), (N, 4)
        target = F.one_hot(y, num_classes).float() if y.ndim == 1 else y.float()
        soft = lam[:, None] * target + (1.0 - lam[:, None]) * target[perm]  # (N, K)

        partner = x[perm]
        dev = x.device
        # MixUp weight per sample: lam where MixUp applies, 1 (keep x) where CutMix or nothing does.
        blend = torch.where(cut, torch.ones_like(lam), lam).view(n, 1, 1, 1).to(x.dtype)
        out = blend * x + (1.0 - blend) * partner
        if p["cutmix"].any():
            b = boxes  # (N, 4) = y0, y1, x0, x1
            ys = torch.arange(h, device=dev).view(1, h, 1)
            xs = torch.arange(w, device=dev).view(1, 1, w)
            inside = (ys >= b[:, 0, None, None]) & (ys < b[:, 1, None, None])
            inside = inside & (xs >= b[:, 2, None, None]) & (xs < b[:, 3, None, None])  # (N, H, W)
            inside = inside & cut.view(n, 1, 1)
            out = torch.where(inside.unsqueeze(1), partner, out)
        return out, soft
