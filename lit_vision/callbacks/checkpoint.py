"""Checkpoints that survive failures: atomic writes, an interrupt checkpoint, and resumes into a new run.

* ``AtomicCheckpointIO`` (a Lightning ``CheckpointIO`` plugin, installed by the CLI) writes
  ``<name>.ckpt.tmp`` and renames it over ``<name>.ckpt`` only once complete, so a full disk or a kill during
  a write never leaves a truncated ``best.ckpt``/``last.ckpt`` behind: the previous file stays intact.
* ``SafeModelCheckpoint`` (Lightning's ``ModelCheckpoint``) writes ``best.ckpt``. When a run resumes from
  another run directory (the CLI's ``--ckpt_path last`` does this), the earlier best score carries over, so
  ``best.ckpt`` is only written when the resumed run beats it.
* ``LastCheckpoint`` (a second, unmonitored ``ModelCheckpoint``) rewrites ``last.ckpt`` at every save point.
* ``InterruptCheckpoint`` (a ``Checkpoint`` on the public ``on_exception`` hook) saves ``interrupted.ckpt``
  when ``fit`` stops on an exception: SIGTERM (Lightning turns it into ``SIGTERMException`` on every rank),
  KeyboardInterrupt, any error except a non-finite loss (whose weights may already be NaN). It is written
  beside the run's other checkpoints and deleted when a later ``fit`` in the same directory completes.

All three use public Lightning APIs only (``CheckpointIO``, ``ModelCheckpoint`` arguments and
``load_state_dict``, the ``Checkpoint`` hooks). ``tests/test_lightning_contract.py`` pins the state keys
``SafeModelCheckpoint.load_state_dict`` reads.
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings
from typing import Any

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_vision.callbacks.monitor import WaitsForMonitor

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "InterruptCheckpoint",
    "LastCheckpoint",
    "SafeModelCheckpoint",
]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permissions...); the previous file is intact.

    ``str()`` is the message alone (no ``[Errno 28]`` prefix): the CLI prints it as its one error line."""

    def __str__(self) -> str:
        return str(self.strerror)


def _size_hint(path: str) -> str:
    """What a checkpoint at ``path`` needs and what its disk has, in MB: the previous version of the file (or
    the largest checkpoint beside it) is the size estimate, as the state has the same tensors each time."""
    folder = os.path.dirname(path) or "."
    beside = [os.path.join(folder, f) for f in os.listdir(folder)] if os.path.isdir(folder) else []
    sizes = [os.path.getsize(p) for p in [path, *beside] if p.endswith(".ckpt") and os.path.isfile(p)]
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    need = f"about {max(sizes) / 1e6:.1f} MB needed, " if sizes else ""
    return f" ({need}{free / 1e6:.1f} MB free there)"


def _is_local(fs: Any) -> bool:
    protocol = getattr(fs, "protocol", "file")
    return "file" in (protocol if isinstance(protocol, tuple | list) else (protocol,))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` writing ``<path>.tmp`` and renaming it over ``<path>`` once complete
    (local filesystems; object stores already replace an object only once it is fully uploaded).

    A full disk or a kill during a write never leaves a truncated checkpoint behind: the previous file stays
    intact, and the error says so. The CLI installs it as the trainer's checkpoint plugin, so every write
    (``best``, ``last``, ``interrupted``, ``trainer.save_checkpoint``) goes through it.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = os.fspath(path)
        if not _is_local(get_filesystem(path)):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        tmp = f"{path}.tmp"
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
        except OSError as err:
            if os.path.exists(tmp):
                os.remove(tmp)
            reason = (
                f"the disk is full{_size_hint(path)}"
                if err.errno == errno.ENOSPC
                else f"{type(err).__name__}: {err}"
            )
            previous = "is left intact" if os.path.exists(path) else "did not exist"
            raise CheckpointWriteError(
                err.errno,
                f"Could not write checkpoint {path}: {reason}. Nothing was replaced: the previous "
                f"{os.path.basename(path)} {previous}. Free space, or point --trainer.default_root_dir (or "
                "--checkpoint.dirpath) at a bigger disk, and run again: --ckpt_path last resumes from the "
                "newest last.ckpt or interrupted.ckpt, if one was written.",
            ) from err
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half


class SafeModelCheckpoint(WaitsForMonitor, ModelCheckpoint):
    """``ModelCheckpoint`` whose best score survives a resume into a new run directory.

    Takes every ``ModelCheckpoint`` argument (``monitor``, ``mode``, ``filename``...). Lightning reloads the
    best score only when the run directory is unchanged; the CLI's ``--ckpt_path last`` resumes into a new
    ``version_N``, where the earlier best is still the one to beat. (The earlier run's files are never
    deleted: Lightning only removes checkpoints inside the current ``dirpath``.)
    """

    # Before the first validation the save points wait for the monitored metric (WaitsForMonitor), and the
    # end of a run that never validated says so once.
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self.waiting(trainer):
            super().on_train_batch_end(trainer, pl_module, *args)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.waiting(trainer):
            super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.waiting(trainer):
            rank_zero_warn(
                f"fit ended at global step {trainer.global_step} without a validation run, so {self.monitor} "
                f"was never measured: no {self.filename or 'best'}.ckpt was written (and early stopping, if "
                "on, never checked). last.ckpt holds the final weights. To validate within a short run: "
                "--trainer.val_check_interval=<training batches> (or more --trainer.max_steps)."
            )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        previous_dir = state_dict.get("dirpath", self.dirpath)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed")  # handled below
            super().load_state_dict(state_dict)
        if previous_dir != self.dirpath and state_dict.get("monitor") == self.monitor:
            self.best_model_score = state_dict["best_model_score"]
            self.best_k_models = dict(state_dict.get("best_k_models", {}))
            self.kth_best_model_path = state_dict.get("kth_best_model_path", "")
            self.kth_value = state_dict.get("kth_value", self.kth_value)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the newest training state, rewritten at every save point (what ``--ckpt_path last``
    resumes from).

    A second, unmonitored ``ModelCheckpoint`` beside the ``best`` one: Lightning's own ``save_last`` skips
    ``last.ckpt`` after epochs that do not improve the monitor, which would leave it stale.

    Args:
        dirpath: where to write it (default: the run's ``checkpoints`` folder, like the best checkpoint).
        filename: file name without ``.ckpt``.
        every_n_epochs: save every this many epochs (``0`` with ``every_n_train_steps`` unset: never).
        every_n_train_steps: save every this many optimizer steps instead (a mid-epoch resume point for long
            epochs); exclusive with ``every_n_epochs``.
        save_on_train_epoch_end: save at the end of the training epoch instead of after validation (default:
            Lightning's choice, i.e. after validation when it runs once per epoch).
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "last",
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        save_on_train_epoch_end: bool | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,  # with no monitor: keep only the newest file
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,  # overwrite last.ckpt instead of writing last-v1.ckpt
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            save_on_train_epoch_end=save_on_train_epoch_end,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Resumed into a new run directory: nothing to carry over (the next save is the newest state), and
        # the earlier run's last.ckpt is outside this dirpath, so it is never deleted.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed")
            super().load_state_dict(state_dict)


class InterruptCheckpoint(Checkpoint):
    """Save ``interrupted.ckpt`` when ``fit`` stops on an exception (SIGTERM, Ctrl+C, errors). Under DDP only
    on SIGTERM, which Lightning turns into an exception on every process at the same step: after any other
    exception the other processes may be inside a collective, and the save's barriers would hang them.

    A ``Checkpoint`` on Lightning's public ``on_exception`` hook, not an ``OnExceptionCheckpoint``: Lightning
    treats the presence of one as "resume from the last checkpoint" whenever ``fit`` gets no ``ckpt_path``
    (with two warnings on every fresh run). Resuming is explicit here: ``--ckpt_path last`` picks this file.
    (Being a ``Checkpoint``, it runs after the ``ModelCheckpoint``, whose directory it reuses.)

    Args:
        dirpath: where to write it (default: the directory of the run's ``ModelCheckpoint``, i.e.
            ``<run>/checkpoints``).
        filename: file name without ``.ckpt``.
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | None = None, filename: str = "interrupted") -> None:
        self.dirpath = dirpath or ""
        self.filename = filename
        self._explicit_dir = dirpath
        self._training_started = False

    @property
    def ckpt_path(self) -> str:
        """The file this run writes on an exception ('' until the run directory is known)."""
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

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.state.fn != "fit" or not self.dirpath:
            return  # validate/test/predict have no training state to save
        if isinstance(exception, CheckpointWriteError):
            # The disk that refused a checkpoint would refuse this one too (or take the last space of it);
            # the error says which checkpoints are intact and to resume from them.
            return
        if isinstance(exception, FloatingPointError):
            # A non-finite loss is noticed some steps late (model.nonfinite_check_every_n_steps): the weights
            # may already hold NaN/inf, and `--ckpt_path last` would pick them up. The earlier checkpoints
            # are the state to resume from.
            rank_zero_warn(f"{self.ckpt_path} not written: the run stopped on a non-finite loss.")
            return
        if trainer.world_size > 1 and not isinstance(exception, SIGTERMException):
            # Writing is collective (barriers around the save). Lightning raises SIGTERMException on every
            # process at the same step (it broadcasts the signal first); any other exception may have hit
            # this process alone while the others wait inside a collective of the step, and a barrier here
            # would hang them all until the collective timeout instead of letting the launcher stop the job.
            warnings.warn(
                f"[rank {trainer.global_rank}] {self.ckpt_path} not written: under {trainer.world_size} "
                "processes only a SIGTERM (preemption, scancel, kill) stops every process at the same step. "
                "Resume from the last checkpoint: --ckpt_path last.",
                stacklevel=2,
            )
            return
        if not self._training_started:
            # An error while setting up (e.g. a resume refused in configure_optimizers): the state is
            # half-restored, and the checkpoint being resumed is still intact. Writing this one would make
            # `--ckpt_path last` pick it next time.
            return
        try:
            # atomic through the CLI's AtomicCheckpointIO; the full training state (weights_only=False), said
            # explicitly: Lightning logs a notice when it has to pick the default
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)
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
