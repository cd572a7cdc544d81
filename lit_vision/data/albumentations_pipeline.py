"""Per-sample augmentation with albumentations, declared in YAML and run in DataLoader workers.

A pipeline is a list of ``{name: <albumentations transform>, <arg>: <value>, ...}`` entries, e.g. ::

    data:
      augment: albumentations
      albumentations:
        - {name: HorizontalFlip, p: 0.5}
        - {name: Affine, translate_percent: 0.1, scale: [0.9, 1.1], rotate: [-15, 15], p: 0.5}
        - {name: CoarseDropout, num_holes_range: [1, 1], hole_height_range: [8, 8],
           hole_width_range: [8, 8], p: 0.5}

The pipeline must return uint8 HWC images: normalization runs batched on the device afterwards. Entries are
checked as ``lit_vision.data.pipeline_spec`` says.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lit_vision.data.pipeline_spec import build_transforms

__all__ = ["AlbumentationsTransform", "build_albumentations", "worker_init_fn"]


def build_albumentations(spec: list[dict[str, Any]]) -> Any:
    """Build an ``albumentations.Compose`` from a YAML-style list of transform entries."""
    import albumentations as A

    transforms = build_transforms(
        spec, A, "data.albumentations", example="HorizontalFlip", refused=("Normalize", "ToTensorV2")
    )
    return A.Compose(transforms)


class AlbumentationsTransform:
    """Picklable callable: uint8 (3, H, W) tensor -> augmented uint8 (3, H, W) tensor."""

    def __init__(self, spec: list[dict[str, Any]]) -> None:
        self.spec = spec
        self.pipeline = build_albumentations(spec)

    def __call__(self, image: Any) -> Any:
        import torch

        hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        out = self.pipeline(image=hwc)["image"]
        if out.dtype != np.uint8:
            raise TypeError("The albumentations pipeline must return uint8 images (no Normalize).")
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1)


def worker_init_fn(worker_id: int) -> None:
    """Keep each worker single-threaded: OpenCV and torch threads would oversubscribe the cores."""
    import cv2
    import torch

    cv2.setNumThreads(0)
    torch.set_num_threads(1)
