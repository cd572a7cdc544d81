"""Per-sample augmentation with torchvision's ``transforms.v2``, declared in YAML, run in DataLoader workers.

A pipeline is a list of ``{name: <transforms.v2 class>, <arg>: <value>, ...}`` entries, e.g. ::

    data:
      augment: torchvision
      torchvision:
        - {name: RandomResizedCrop, size: 32, scale: [0.6, 1.0], antialias: true}
        - {name: RandomHorizontalFlip}
        - {name: TrivialAugmentWide}

Each transform takes and returns a uint8 (3, H, W) tensor at the training size: normalization runs
batched on the device afterwards, so ``Normalize``, ``ToDtype`` and ``ToTensor``-like entries are refused.
"""

from __future__ import annotations

import difflib
from typing import Any

from lit_vision.errors import ConfigError

__all__ = ["TorchvisionTransform", "build_torchvision"]

#: entries that would hand the batched normalization something other than uint8 pixels
_REFUSED = ("Normalize", "ToDtype", "ToTensor", "ToImage", "ToPILImage", "ToPureTensor", "ConvertImageDtype")


def build_torchvision(spec: list[dict[str, Any]]) -> Any:
    """Build a ``torchvision.transforms.v2.Compose`` from a YAML-style list of transform entries."""
    from torchvision.transforms import v2

    # Built when the datamodule is (ImageDataModule.__init__): a bad entry is refused before any data loads,
    # named as the option that holds the pipeline.
    transforms = []
    for entry in spec:
        if "name" not in entry:
            raise ConfigError(
                f"--data.torchvision entry {entry} needs a 'name' key (e.g. name: RandomHorizontalFlip)."
            )
        name = entry["name"]
        kwargs = {k: v for k, v in entry.items() if k != "name"}
        if name in _REFUSED:
            raise ConfigError(
                f"Remove {name} from --data.torchvision: normalization runs batched on the device."
            )
        cls = getattr(v2, name, None)
        if cls is None or not isinstance(cls, type):
            close = difflib.get_close_matches(name, [n for n in dir(v2) if n[:1].isupper()], n=3)
            raise ConfigError(
                f"Unknown torchvision.transforms.v2 transform {name!r} in --data.torchvision. "
                f"Did you mean: {', '.join(close) or 'none close'}?"
            )
        try:
            transforms.append(cls(**kwargs))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"--data.torchvision entry {entry}: {' '.join(str(err).split())}") from None
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
