"""The CLI's loggers: a CSV logger whose folder follows ``trainer.default_root_dir``, and a Weights & Biases
logger that never hangs.

W&B: the logger never hangs (offline when there is no API key or no network), and resumes.

``wandb.init`` online without a reachable server waits for its init timeout (90 s) and then fails; a user
without an account gets a login prompt. This subclass of Lightning's ``WandbLogger`` decides up front: an
explicit ``offline`` argument or ``WANDB_MODE`` (``online``/``offline``/``disabled``) wins; otherwise the run
is online only if an API key is configured and the W&B server accepts a TCP connection within a few seconds.
Offline runs are written under ``<save_dir>/wandb/offline-run-*`` and can be uploaded later with
``wandb sync``.
"""

from __future__ import annotations

import netrc
import os
import socket
from typing import Any
from urllib.parse import urlparse

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from lit_vision.lightning_workarounds import set_wandb_init

__all__ = ["CSVLogger", "WandbLogger", "WandbRunId", "wandb_online_possible"]


def _has_api_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_online_possible(timeout_s: float = 3.0) -> bool:
    """An API key is configured and the W&B server (``WANDB_BASE_URL``) answers a TCP connect."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host = url.hostname or "api.wandb.ai"
    if not _has_api_key(host):
        return False
    try:
        with socket.create_connection((host, url.port or (443 if url.scheme == "https" else 80)), timeout_s):
            return True
    except OSError:
        return False


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger`` (``metrics.csv`` and ``hparams.yaml`` in ``<save_dir>/<name>/version_N``)
    whose ``save_dir`` may be left to the run: the CLI's default logger.

    Args:
        save_dir: parent folder of the run directories. ``None`` (default): ``trainer.default_root_dir`` when
            the run sets one, else ``runs`` in the working directory (checkpoints go to the run directory, so
            they follow too).
        name: experiment name: the folder under ``save_dir`` (configs name it after themselves).
        version: run directory name; ``None``: the next free ``version_N``.
        prefix: put at the start of every metric key.
        flush_logs_every_n_steps: write ``metrics.csv`` every this many steps.
    """

    #: where runs go when neither the logger nor the trainer names a folder
    DEFAULT_SAVE_DIR = "runs"

    def __init__(
        self,
        save_dir: str | None = None,
        name: str | None = "default",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        #: whether the folder was given (else the CLI puts the logger under trainer.default_root_dir)
        self.save_dir_given = save_dir is not None
        self._settings = {
            "name": name,
            "version": version,
            "prefix": prefix,
            "flush_logs_every_n_steps": flush_logs_every_n_steps,
        }
        super().__init__(save_dir if save_dir is not None else self.DEFAULT_SAVE_DIR, **self._settings)

    def under(self, save_dir: str | os.PathLike[str]) -> CSVLogger:
        """The same logger writing under ``save_dir``: a new one, as Lightning's CSV logger fixes its folder
        when it is built (no public way to move it)."""
        return type(self)(save_dir=os.fspath(save_dir), **self._settings)


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with an automatic offline fallback, for the CLI's ``wandb`` key.

    The CLI logs to it next to the CSV logger (``metrics.csv`` and the run directory stay where they are),
    and a ``fit --ckpt_path`` resume continues the W&B run the checkpoint was logged to (:class:`WandbRunId`).

    Args:
        name: run name shown in W&B.
        save_dir: parent folder of the local ``wandb/`` run directories; ``None``: the CSV logger's
            ``save_dir`` (the CLI fills it), else ``trainer.default_root_dir`` when the run sets one, else
            the working directory.
        project: W&B project.
        offline: ``True``/``False`` forces the mode; ``None`` (default): ``WANDB_MODE`` if set, else online
            only when an API key exists and the server is reachable (probed by rank 0 only: the other ranks
            of a DDP run log nothing).
        log_model: upload checkpoints as W&B artifacts (``True``: at the end, ``"all"``: every checkpoint).
            Offline runs cannot upload: it is then turned off with a warning.
        kwargs: passed on to Lightning's ``WandbLogger`` and ``wandb.init`` (``entity``, ``tags``, ...).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | None = None,
        project: str = "lit_vision",
        offline: bool | None = None,
        log_model: bool | str = False,
        **kwargs: Any,
    ) -> None:
        mode = os.environ.get("WANDB_MODE", "").lower()
        if offline is None:
            if mode in ("offline", "dryrun"):
                offline = True
            elif mode in ("online", "run", "disabled"):
                offline = False  # disabled: wandb itself turns every call into a no-op
            elif rank_zero_only.rank != 0:
                offline = (
                    True  # Lightning's W&B calls run on rank 0 only: no probe for a logger that never logs
                )
            else:
                offline = not wandb_online_possible()
                if offline:
                    rank_zero_info(
                        "W&B: no API key or server unreachable, logging offline under "
                        f"{save_dir or '.'}/wandb/ (upload later with `wandb sync`)."
                    )
        if offline and log_model:
            # Lightning refuses log_model with offline; a run that fell back to offline should still train.
            rank_zero_warn(
                f"W&B: log_model={log_model!r} needs an online run; this one is offline, so checkpoints stay "
                "on disk only (upload them later with `wandb artifact put`)."
            )
            log_model = False
        if save_dir is not None:
            os.makedirs(save_dir, exist_ok=True)
        super().__init__(
            name=name, save_dir=save_dir, project=project, offline=offline, log_model=log_model, **kwargs
        )

    # The two methods below set wandb.init's arguments after construction, before the run exists, which
    # Lightning's WandbLogger has no public way to do (lightning_workarounds.set_wandb_init).
    def place_under(self, save_dir: str) -> None:
        """Write the local run under ``save_dir/wandb`` (when no ``save_dir`` was given)."""
        os.makedirs(save_dir, exist_ok=True)
        set_wandb_init(self, dir=os.fspath(save_dir))

    def resume_run(self, run_id: str) -> None:
        """Log to the existing W&B run ``run_id`` (``wandb.init(id=..., resume="allow")``)."""
        set_wandb_init(self, id=run_id, resume="allow")


class WandbRunId(Callback):
    """Stores the W&B run id in checkpoints (``callbacks`` -> ``WandbRunId``), so that a resumed ``fit``
    logs to the same run: the CLI reads it before the logger starts its run
    (:meth:`WandbLogger.resume_run`)."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = next((lg for lg in trainer.loggers if isinstance(lg, _LightningWandbLogger)), None)
        if logger is not None and trainer.is_global_zero:
            self.run_id = logger.version

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run_id = state_dict.get("run_id") or self.run_id

    @staticmethod
    def from_checkpoint(checkpoint: dict[str, Any]) -> str | None:
        """The run id a checkpoint's ``WandbRunId`` state holds, if any."""
        return (checkpoint.get("callbacks", {}).get(WandbRunId.__qualname__) or {}).get("run_id")
