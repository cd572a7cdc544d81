"""Reading a checkpoint file safely: the one place that unpickles a file the user hands over.

Loading is safe by default: ``torch.load(weights_only=True)`` unpickles tensors, containers and plain values
only, so a crafted file cannot run code (``.safetensors`` weights from
``lit_vision.models.checkpoint_io.safetensors_file`` hold no pickle at all). Every checkpoint this project
writes loads that way. A file that needs more (pickled Python objects) is refused with the reason;
``trusted=True`` (the apps' ``--trust-checkpoint``) loads it with full unpickling, for files whose origin
the user trusts.

It knows nothing of the model: ``lit_vision.models.inference.classifier_loading`` builds an
``ImageClassifier`` from what this reads, and ``lit_vision.models.training.pretrained`` takes backbone
weights from it.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

__all__ = ["TRUST_CHECKPOINT_HELP", "CheckpointError", "UntrustedCheckpointError", "read_checkpoint"]


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
        from lit_vision.models.checkpoint_io.safetensors_file import read_weights

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
