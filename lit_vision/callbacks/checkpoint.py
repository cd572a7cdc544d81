"""Checkpoints that survive failures: atomic writes, an interrupt checkpoint, and resumes into a new run.

* ``SafeModelCheckpoint`` (Lightning's ``ModelCheckpoint``) keeps ``last.ckpt`` the newest state (Lightning
  2.6 skips it after epochs that do not improve the monitor) and writes ``<name>.ckpt.tmp``, renamed over
  ``<name>.ckpt`` only once complete, so a full disk or a kill during a write never leaves a truncated
  ``best.ckpt``/``last.ckpt`` behind: the previous file stays intact. When a run resumes from another run
  directory (the CLI's ``--ckpt_path last`` does this), the earlier best score carries over, so ``best.ckpt``
  is only written when the resumed run beats it, and the earlier run's files are never deleted.
* ``InterruptCheckpoint`` (Lightning's ``OnExceptionCheckpoint``) saves ``interrupted.ckpt`` when ``fit``
  stops on an exception: SIGTERM (Lightning turns it into ``SIGTERMException`` on every rank),
  KeyboardInterrupt, a non-finite loss, any error. It is written beside the run's other checkpoints and
  deleted when a later ``fit`` in the same directory completes.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["CheckpointWriteError", "InterruptCheckpoint", "SafeModelCheckpoint"]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions...); the previous file is intact."""


def _is_local(fs: Any) -> bool:
    protocol = getattr(fs, "protocol", "file")
    return "file" in (protocol if isinstance(protocol, tuple | list) else (protocol,))


def _write_atomically(trainer: L.Trainer, filepath: str, weights_only: bool, fs: Any) -> None:
    """``trainer.save_checkpoint`` to ``filepath.tmp``, then rename (local filesystems; remote ones are
    written in place, as object stores already replace an object only once it is fully uploaded)."""
    if not _is_local(fs):
        trainer.save_checkpoint(filepath, weights_only)
        return
    tmp = f"{filepath}.tmp"
    try:
        trainer.save_checkpoint(tmp, weights_only)
    except OSError as err:
        if trainer.is_global_zero and os.path.exists(tmp):
            os.remove(tmp)
        reason = "the disk is full" if err.errno == errno.ENOSPC else f"{type(err).__name__}: {err}"
        previous = "is left intact" if os.path.exists(filepath) else "did not exist"
        raise CheckpointWriteError(
            err.errno,
            f"Could not write checkpoint {filepath}: {reason}. Nothing was replaced: the previous "
            f"{os.path.basename(filepath)} {previous}. Free space (or point trainer.default_root_dir / "
            "checkpoint.dirpath elsewhere) and resume with --ckpt_path last.",
        ) from err
    if trainer.is_global_zero:
        os.replace(tmp, filepath)  # atomic on POSIX: readers see the old file or the new one, never half
    trainer.strategy.barrier("SafeModelCheckpoint.rename")


class SafeModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with atomic writes and resumes that keep the best score (see module docstring).

    Takes every ``ModelCheckpoint`` argument (``monitor``, ``mode``, ``filename``, ``save_last``...).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_saved_step: int | None = None

    # Lightning >= 2.6 writes last.ckpt only at steps where a top-k checkpoint was written, so after an
    # epoch that does not improve the monitor, last.ckpt would be stale. Ours is always the newest state.
    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        self._last_saved_step = trainer.global_step
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        if self.save_last and self._last_saved_step != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and not self._should_save_on_train_epoch_end(
            trainer
        ):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        _write_atomically(trainer, filepath, self.save_weights_only, self._fs)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        # Never delete a file of another run directory (one this run resumed from).
        if self.dirpath is not None and Path(filepath).resolve().parent != Path(self.dirpath).resolve():
            return
        super()._remove_checkpoint(trainer, filepath)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        previous_dir = state_dict.get("dirpath", self.dirpath)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed")  # handled below
            super().load_state_dict(state_dict)
        if previous_dir != self.dirpath and state_dict.get("monitor") == self.monitor:
            # Resumed into a new run directory: the earlier run's best is still the one to beat.
            self.best_model_score = state_dict["best_model_score"]
            self.best_k_models = dict(state_dict.get("best_k_models", {}))
            self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
            self.kth_value = state_dict.get("kth_value", self.kth_value)


class InterruptCheckpoint(OnExceptionCheckpoint):
    """Save ``interrupted.ckpt`` when ``fit`` stops on an exception (SIGTERM, Ctrl+C, errors).

    Args:
        dirpath: where to write it (default: the directory of the run's ``ModelCheckpoint``, i.e.
            ``<run>/checkpoints``).
        filename: file name without ``.ckpt``.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "interrupted") -> None:
        super().__init__(dirpath=dirpath or "", filename=filename)
        self._explicit_dir = dirpath
        self._training_started = False

    @property
    def ckpt_path(self) -> str:
        # Empty until the run directory is known: Lightning's ckpt_path="last" lookup skips empty paths.
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION) if self.dirpath else ""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._explicit_dir is None:
            main = trainer.checkpoint_callback
            self.dirpath = (
                main.dirpath
                if isinstance(main, ModelCheckpoint) and main.dirpath
                else os.path.join(trainer.default_root_dir, "checkpoints")
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._training_started = True

    def on_exception(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.state.fn != "fit" or not self.dirpath:
            return  # validate/test/predict have no training state to save
        if not self._training_started:
            # An error while setting up (e.g. a resume refused in configure_optimizers): the state is
            # half-restored, and the checkpoint being resumed is still intact. Writing this one would make
            # `--ckpt_path last` pick it next time.
            return
        try:
            _write_atomically(trainer, self.ckpt_path, False, self._fs_for(self.ckpt_path))
        except Exception as err:  # must not hide the exception that stopped the run
            rank_zero_warn(f"Could not write the interrupt checkpoint {self.ckpt_path}: {err}")
            return
        rank_zero_warn(
            f"Run stopped at global step {trainer.global_step}; state saved to {self.ckpt_path}. "
            "Resume with: --ckpt_path last (or --ckpt_path <that file>)."
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Reached only when fit completes: its interrupt checkpoint is stale. Other stages keep it.
        if stage == "fit" and self.ckpt_path:
            trainer.strategy.remove_checkpoint(self.ckpt_path)

    @staticmethod
    def _fs_for(path: str) -> Any:
        from lightning.fabric.utilities.cloud_io import get_filesystem

        return get_filesystem(path)
