"""Reading and writing ``ImageClassifier`` checkpoints outside a Trainer (predict, report, explain, export).

Loading is safe by default: ``torch.load(weights_only=True)`` unpickles tensors, containers and plain values
only, so a crafted file cannot run code (``.safetensors`` weights from ``lit_vision.models.weights`` hold no
pickle at all). Every checkpoint this project writes loads that way. A file that
needs more (pickled Python objects) is refused with the reason; ``trusted=True`` (the apps'
``--trust-checkpoint``) loads it with full unpickling, for files whose origin the user trusts.
"""

from __future__ import annotations

import inspect
import pickle
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import ArgumentParser

from lit_vision.models.classifier import ImageClassifier

__all__ = [
    "TRUST_CHECKPOINT_HELP",
    "CheckpointError",
    "UntrustedCheckpointError",
    "build_module",
    "load_classifier",
    "read_checkpoint",
    "save_classifier",
]


#: ``--help`` of the apps' ``--trust-checkpoint`` flag
TRUST_CHECKPOINT_HELP = (
    "load a checkpoint that holds pickled Python objects (unpickling can run code from the file: only for "
    "files you trust)"
)


class CheckpointError(ValueError):
    """A file that is not a readable lit_vision checkpoint (missing, truncated, foreign)."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint that holds pickled Python objects: loading it could run code, so it needs an opt-in."""


def read_checkpoint(
    path: str | Path,
    trusted: bool = False,
    opt_in: str | None = "--trust-checkpoint (trusted=True in Python)",
) -> dict[str, Any]:
    """The checkpoint dict of ``path`` on CPU; ``trusted`` allows arbitrary pickled objects (can run code).
    ``opt_in`` is how the refusal message tells the user to trust the file (the flag of the app at hand);
    ``None`` where there is no opt-in (the message says how to re-save the weights instead).

    Raises:
        FileNotFoundError: no such file.
        UntrustedCheckpointError: the file needs full unpickling and ``trusted`` is false.
        CheckpointError: not a torch checkpoint (truncated, another format), or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    if path.suffix == ".safetensors":  # tensors and text only: safe without any opt-in
        from lit_vision.models.weights import read_weights

        try:
            return read_weights(path)
        except ValueError as err:
            raise CheckpointError(str(err)) from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        if not trusted and "Unsupported global" in str(err):
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            reason = found.group(1) if found else "an object torch's safe loader does not allow"
            advice = (
                f"If you trust where the file came from, pass {opt_in}."
                if opt_in
                else "Only tensors are read here: load the file in a Python session you trust and save its "
                "weights alone with torch.save(model.state_dict(), path)."
            )
            raise UntrustedCheckpointError(
                f"{path} holds pickled Python objects ({reason}), and unpickling them can run code from the "
                f"file. Checkpoints written by lit_vision never need this. {advice}"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint: {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as err:  # truncated zip, empty file, another format
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or not written by torch.save): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict.")
    return checkpoint


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
