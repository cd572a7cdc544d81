"""Per-sample augmentation with torchvision's ``transforms.v2``, declared in YAML, run in DataLoader workers.

A pipeline is a list of ``{name: <transforms.v2 class>, <arg>: <value>, ...}`` entries, e.g. ::

    data:
      augment: torchvision
      torchvision:
        - {name: RandomResizedCrop, size: 32, scale: [0.6, 1.0], antialias: true}
        - {name: RandomHorizontalFlip}
        - {name: TrivialAugmentWide}

Each transform takes and returns a uint8 (3, H, W) tensor at the training size: normalization runs
batched on the device afterwards, so ``Normalize``, ``ToDtype`` and ``ToTensor``-like entries are refused
(with the other checks of ``lit_vision.data.pipeline_spec``).
"""

from __future__ import annotations

from typing import Any

from lit_vision.data.pipeline_spec import build_transforms

__all__ = ["TorchvisionTransform", "build_torchvision"]

#: entries that would hand the batched normalization something other than uint8 pixels
_REFUSED = ("Normalize", "ToDtype", "ToTensor", "ToImage", "ToPILImage", "ToPureTensor", "ConvertImageDtype")


def build_torchvision(spec: list[dict[str, Any]]) -> Any:
    """Build a ``torchvision.transforms.v2.Compose`` from a YAML-style list of transform entries."""
    from torchvision.transforms import v2

    transforms = build_transforms(
        spec, v2, "data.torchvision", example="RandomHorizontalFlip", refused=_REFUSED
    )
    return v2.Compose(transforms)


class TorchvisionTransform:
    """Picklable callable: uint8 (3, H, W) tensor -> augmented uint8 (3, H, W) tensor of the same size."""

    def __init__(self, spec: list[dict[str, Any]]) -> None:
        self.spec = spec
        self.pipeline = build_torchvision(spec)

    def __call__(self, image: Any) -> Any:
        import torch

        out = self.pipeline(image)
        if not isinstance(out, torch.Tensor) or out.dtype != torch.uint8 or out.shape != image.shape:
            got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise TypeError(
                "The torchvision pipeline must return uint8 images of the input's size "
                f"{tuple(image.shape)}, got {got}: crop or resize back to the training size, and leave "
                "normalization out."
            )
        return out
