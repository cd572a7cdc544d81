"""Transfer learning: load a backbone's weights from a checkpoint or file, with a new head if needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lit_vision.models.checkpoint_io.reading import read_checkpoint

__all__ = ["classifier_head", "load_backbone_weights"]


def classifier_head(backbone: nn.Module) -> nn.Module:
    """The module that maps features to logits: ``backbone.get_classifier()`` (every lit_vision backbone,
    torchvision and timm models through the registry, timm's own models).

    Raises:
        TypeError: for a module without ``get_classifier`` (a model given by ``class_path`` must define it
            to be fine-tuned head-first, explained with CAM or re-headed).
    """
    get_classifier = getattr(backbone, "get_classifier", None)
    if not callable(get_classifier):
        raise TypeError(
            f"{type(backbone).__name__} has no get_classifier(): define it (returning the final nn.Linear or "
            "1x1 nn.Conv2d) or subclass lit_vision.models.Backbone, timm's convention."
        )
    return get_classifier()


def _state_dict_from(path: Path) -> dict[str, torch.Tensor]:
    blob: dict[str, Any] = read_checkpoint(path, opt_in=None)  # tensors and plain values only
    if "state_dict" in blob and "hyper_parameters" in blob:  # a lit_vision checkpoint
        prefix = "backbone."
        return {k[len(prefix) :]: v for k, v in blob["state_dict"].items() if k.startswith(prefix)}
    for key in ("state_dict", "model", "model_state_dict"):  # common wrappers of a state_dict
        if isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    return {k: v for k, v in blob.items() if isinstance(v, torch.Tensor)}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Copy every tensor of ``path`` whose name and shape match into ``backbone``.

    The classifier head is the only part allowed to differ (a new ``num_classes``: it keeps its fresh
    initialization); any other missing or mismatched tensor means another architecture and is an error.

    Returns:
        ``{"loaded": [...], "new_head": [...]}`` parameter names.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Pretrained weights {path} do not exist.")
    source = _state_dict_from(path)
    own = backbone.state_dict()
    # without get_classifier() no part may differ: the whole module must match the file
    head = classifier_head(backbone) if callable(getattr(backbone, "get_classifier", None)) else None
    head_names = {name for name, _ in _named_in(backbone, head)} if head is not None else set()
    loaded = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    problems = [k for k in own if k not in loaded and k not in head_names]
    if problems:
        shapes = [
            f"{k} {tuple(own[k].shape)} vs {tuple(source[k].shape) if k in source else 'missing'}"
            for k in problems
        ]
        raise ValueError(
            f"{path} does not fit this backbone ({len(problems)} tensors differ, e.g. "
            f"{'; '.join(shapes[:3])}). Pretrained weights must come from the same backbone (and "
            "backbone_kwargs); only the classifier head may differ."
        )
    backbone.load_state_dict(loaded, strict=False)
    return {"loaded": sorted(loaded), "new_head": sorted(k for k in head_names if k not in loaded)}


def _named_in(root: nn.Module, module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """State-dict names (relative to ``root``) of ``module``'s tensors."""
    prefix = next(name for name, m in root.named_modules() if m is module)
    return [(f"{prefix}.{k}" if prefix else k, v) for k, v in module.state_dict().items()]


def initialize_backbone_for_fit(module: Any, datamodule: Any, resuming: bool) -> None:
    """The backbone's starting weights when ``fit`` starts from scratch: ``model.pretrained_weights`` when
    given, else the backbone's data-dependent initialization when it has one (airbench's whitening, from
    ``datamodule``'s training images); nothing when ``resuming`` (the checkpoint's weights follow)."""
    if resuming:
        return
    pretrained = module.hparams.get("pretrained_weights")
    if pretrained:
        report = load_backbone_weights(module.backbone, pretrained)
        new_head = f"; new head: {', '.join(report['new_head'])}" if report["new_head"] else ""
        rank_zero_info(f"Loaded {len(report['loaded'])} backbone tensors from {pretrained}{new_head}")
    elif hasattr(module.backbone, "init_from_data"):
        module.init_backbone_from_data(datamodule)
