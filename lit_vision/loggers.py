"""Weights & Biases logger that never hangs: offline when there is no API key or no network.

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

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["WandbLogger", "wandb_online_possible"]


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


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with an automatic offline fallback.

    Args:
        name: run name shown in W&B.
        save_dir: parent folder of the local ``wandb/`` run directories.
        project: W&B project.
        offline: ``True``/``False`` forces the mode; ``None`` (default): ``WANDB_MODE`` if set, else online
            only when an API key exists and the server is reachable.
        log_model: upload checkpoints as W&B artifacts (``True``: at the end, ``"all"``: every checkpoint).
        kwargs: passed on to Lightning's ``WandbLogger`` and ``wandb.init`` (``entity``, ``tags``, ...).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str = "runs",
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
            else:
                offline = not wandb_online_possible()
                if offline:
                    rank_zero_info(
                        "W&B: no API key or server unreachable, logging offline under "
                        f"{save_dir}/wandb/ (upload later with `wandb sync`)."
                    )
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(
            name=name, save_dir=save_dir, project=project, offline=offline, log_model=log_model, **kwargs
        )
