"""What the command-line apps (``predict.py``, ``report``, ``explain``, ``export``) share: how they name a
checkpoint and where they run (errors end with their message and an exit code through
``lit_vision.errors.exit_on_error``, as every command's do)."""

from __future__ import annotations

import argparse
from typing import Any

from lightning.pytorch.accelerators import Accelerator, CUDAAccelerator

from lit_vision.models.inference.classifier_loading import TRUST_CHECKPOINT_HELP

__all__ = ["add_checkpoint_arguments", "inference_precision", "runs_on_cuda"]


def runs_on_cuda(accelerator: Any = "auto") -> bool:
    """Whether ``accelerator`` (a Trainer's name for it, or an Accelerator) puts the model on CUDA devices.

    ``auto`` asks ``CUDAAccelerator.is_available()``, which counts devices through NVML where it can: unlike
    ``torch.cuda.is_available()`` it does not initialize CUDA in this process, so fork-based strategies
    (``ddp_fork``, ``ddp_notebook``) can still start their workers afterwards."""
    if isinstance(accelerator, Accelerator):
        return isinstance(accelerator, CUDAAccelerator)
    # "gpu" is CUDA when there is one, else Apple's MPS (Lightning's rule)
    return accelerator == "cuda" or (accelerator in ("auto", "gpu") and CUDAAccelerator.is_available())


def inference_precision(accelerator: Any = "auto") -> str:
    """What ``--precision auto`` means for inference: ``bf16-mixed`` on a CUDA GPU with bf16 units (Ampere and
    later), ``16-mixed`` on older ones (no grad scaler is needed without a backward), ``32-true`` elsewhere
    (CPUs gain little from autocast and lose exactness). Asks CUDA only once the run is known to use it."""
    if not runs_on_cuda(accelerator):
        return "32-true"
    import torch

    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def add_checkpoint_arguments(parser: argparse.ArgumentParser, ensemble: bool = False) -> None:
    """``--ckpt`` (repeatable with ``ensemble``: the checkpoints' probabilities are averaged) and
    ``--trust-checkpoint``."""
    if ensemble:
        parser.add_argument(
            "--ckpt", action="append", required=True, help="checkpoint; repeat for an ensemble"
        )
    else:
        parser.add_argument("--ckpt", required=True, help="a lit_vision checkpoint")
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_CHECKPOINT_HELP)
