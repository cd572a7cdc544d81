"""Reading and writing ``ImageClassifier`` checkpoints outside a Trainer (predict, report, explain, export).

Files are read by :func:`~lit_vision.models.checkpoint_io.reading.read_checkpoint` (re-exported here), safe
by default: a file that would need full unpickling is refused unless ``trusted=True`` (the apps'
``--trust-checkpoint``); ``lit_vision.models.checkpoint_io.reading`` says what that means and why.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import ArgumentParser

from lit_vision.models.checkpoint_io.reading import (
    TRUST_CHECKPOINT_HELP,
    CheckpointError,
    UntrustedCheckpointError,
    read_checkpoint,
)
from lit_vision.models.training.classifier import ImageClassifier

__all__ = [
    "TRUST_CHECKPOINT_HELP",
    "CheckpointError",
    "UntrustedCheckpointError",
    "build_module",
    "load_classifier",
    "read_checkpoint",
    "save_classifier",
]


def load_classifier(path: str | Path, trusted: bool = False) -> ImageClassifier:
    """The ``ImageClassifier`` of a checkpoint, on CPU in eval mode, with clear errors for files that are
    not ours or name an unknown backbone (see :func:`read_checkpoint` for ``trusted``).

    A backbone given to ``train.py`` by ``class_path`` is rebuilt from the ``{class_path, init_args}`` the
    checkpoint stores (its module is imported, as the training config did); one passed to
    ``ImageClassifier(backbone=module)`` in Python cannot be, and the error says how to load its weights.
    """
    checkpoint = read_checkpoint(path, trusted)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    if "state_dict" not in checkpoint or not hparams:
        raise CheckpointError(
            f"{path} is not a lit_vision ImageClassifier checkpoint (no model hyperparameters)."
        )
    if "backbone" not in hparams:
        raise CheckpointError(
            f"{path} was trained with a backbone passed as a module object, which a checkpoint cannot "
            "rebuild. Build the model in Python (ImageClassifier(backbone=YourNet(...), num_classes=...)) "
            "and "
            "load the weights with model.load_state_dict(torch.load(path)['state_dict']), or train with "
            "model.backbone given by class_path, which checkpoints store."
        )
    try:
        spec = hparams["backbone"]
        if isinstance(spec, dict):  # {class_path, init_args} from the training config
            hparams["backbone"] = build_module(spec)
        accepted = inspect.signature(ImageClassifier).parameters
        model = ImageClassifier(**{k: v for k, v in hparams.items() if k in accepted})
        model.hparams["backbone"] = spec  # saved again as it came (a module object is not saved)
    except (ValueError, TypeError, ImportError) as err:  # unknown name (with suggestions), changed class
        raise CheckpointError(f"Cannot rebuild the model of {path}: {err}") from err
    model.on_load_checkpoint(checkpoint)  # what Lightning's loading calls first: the input size
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:  # the rebuilt model's tensors differ from the file's
        first = str(err).splitlines()[0]
        raise CheckpointError(f"The weights of {path} do not fit the model it names: {first}") from None
    return model.eval()


def build_module(spec: dict[str, Any]) -> torch.nn.Module:
    """The ``nn.Module`` a ``{class_path, init_args}`` dict names, instantiated as LightningCLI does (nested
    ``class_path`` arguments included); anything that is not an ``nn.Module`` subclass is refused."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(torch.nn.Module, "module", fail_untyped=False)
    try:
        config = parser.parse_object({"module": spec})
    except Exception as err:  # jsonargparse's ArgumentError: a class that is gone or not an nn.Module
        raise ValueError(f"backbone {spec.get('class_path')!r}: {str(err).splitlines()[0]}") from None
    return parser.instantiate_classes(config).module


def save_classifier(model: ImageClassifier, path: str | Path) -> Path:
    """Write ``model`` as a checkpoint ``load_classifier`` and ``predict.py`` read, without a Trainer (a model
    trained by hand, or built for a benchmark): weights, hyperparameters, normalization and input size."""
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": L.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # what training adds: the input size
    path = Path(path)
    torch.save(checkpoint, path)
    return path
