"""Checkpoints of short training runs: the one behind conftest's ``tiny_checkpoint`` (shared by every test
that only reads one), and copying a run before a test writes beside its checkpoint."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from lit_vision.cli import main

from .cli import folder_run_args


def train_checkpoint(data: Path, runs: Path, cache: Path, seed: int) -> Path:
    """``last.ckpt`` of a fit on the 3-class ImageFolder tree ``data``: Adam at lr 0.01 learns the generated
    task in 3 epochs (a test set accuracy well above chance), and ``seed`` gives another set of weights."""
    cli = main(
        [
            "fit",
            *folder_run_args(data, runs),
            f"--data.cache_dir={cache}",
            f"--seed_everything={seed}",
            "--trainer.max_epochs=3",
            "--model.optimizer=torch.optim.Adam",
            "--model.optimizer.lr=0.01",
        ]
    )
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def run_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint was written in (``<run>/checkpoints/<name>.ckpt``)."""
    return checkpoint.parents[1]


def copy_run(checkpoint: Path, to: Path) -> Path:
    """Copy the checkpoint's whole run directory (metrics.csv, config.yaml, ...) to ``to``; return the copy's
    checkpoint. For tests that write beside a shared checkpoint (a report, predictions.csv)."""
    shutil.copytree(run_of(checkpoint), to)
    return to / checkpoint.relative_to(run_of(checkpoint))


def digest(folder: Path) -> dict[str, str]:
    """Everything under ``folder`` by its relative path: a file's SHA-256, ``"folder"`` for a folder."""

    def content(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"

    return {p.relative_to(folder).as_posix(): content(p) for p in sorted(folder.rglob("*"))}
