"""The YAML form of a per-sample pipeline, shared by ``albumentations_pipeline`` and ``torchvision_pipeline``.

A pipeline is a list of ``{name: <transform class>, <arg>: <value>, ...}`` entries. It is built when the
datamodule is (``ImageDataModule.__init__``): a bad entry is refused before any data loads, named as the
option that holds the pipeline (``--data.albumentations``), with the closest names for a misspelled one.
"""

from __future__ import annotations

import difflib
from types import ModuleType
from typing import Any

from lit_vision.errors import ConfigError

__all__ = ["build_transforms"]


def build_transforms(
    spec: list[dict[str, Any]], library: ModuleType, option: str, example: str, refused: tuple[str, ...]
) -> list[Any]:
    """The transforms ``spec`` lists, each built from ``library``'s class of that name.

    Args:
        spec: the entries, as the YAML gives them.
        library: the module that holds the transform classes (``albumentations``,
            ``torchvision.transforms.v2``); messages name it by its ``__name__``.
        option: the option that holds the pipeline, without ``--`` (``data.albumentations``).
        example: a transform name for the message about an entry without one.
        refused: names that would hand the batched normalization something other than uint8 pixels.

    Raises:
        ConfigError: for an entry without a name, a refused or unknown name, or arguments its class refuses.
    """
    transforms = []
    for entry in spec:
        if "name" not in entry:
            raise ConfigError(f"--{option} entry {entry} needs a 'name' key (e.g. name: {example}).")
        name = entry["name"]
        kwargs = {k: v for k, v in entry.items() if k != "name"}
        if name in refused:
            raise ConfigError(f"Remove {name} from --{option}: normalization runs batched on the device.")
        cls = getattr(library, name, None)
        if cls is None or not isinstance(cls, type):
            close = difflib.get_close_matches(name, [n for n in dir(library) if n[:1].isupper()], n=3)
            raise ConfigError(
                f"Unknown {library.__name__} transform {name!r} in --{option}. "
                f"Did you mean: {', '.join(close) or 'none close'}?"
            )
        try:
            transforms.append(cls(**kwargs))
        except (TypeError, ValueError) as err:  # pydantic's ValidationError (albumentations) is a ValueError
            raise ConfigError(f"--{option} entry {entry}: {' '.join(str(err).split())}") from None
    return transforms
