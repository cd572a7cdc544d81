"""Workarounds for open Lightning bugs, each with its issue, in one place because each reads or sets private
members of Lightning's loops (no public way exists). Every layer may import this module: it imports nothing
of lit_vision. Delete a workaround when the Lightning release it needs is the minimum in ``pyproject.toml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["estimated_stepping_batches", "parse_checkpoint_hparams_as_defaults"]


def estimated_stepping_batches(trainer: Any) -> int | float:
    """``trainer.estimated_stepping_batches``, without losing the train loader's state on a resume.

    ``configure_optimizers`` runs before Lightning restores a checkpoint. Asking for the step count there
    makes the fit loop build the train loader (and start its iterator) early; when the fit loop later runs,
    it keeps that loader and never loads the loader state the checkpoint holds (Lightning issue #20550,
    open in 2.6). A run resumed mid-epoch would then start the epoch's sample order from the beginning and
    train on some images twice and on others not at all, with either data back-end. Dropping the early
    loader makes the fit loop build it again after the restore, with the saved state loaded.
    """
    loop = trainer.fit_loop
    built_before = loop._combined_loader is not None
    total = trainer.estimated_stepping_batches
    if trainer.ckpt_path is not None and not built_before and loop._combined_loader is not None:
        if loop._data_fetcher is not None:
            loop._data_fetcher.teardown()  # stops workers the early iterator started
            loop._data_fetcher = None
        loop._combined_loader = None
    return total


def parse_checkpoint_hparams_as_defaults(cli: Any, args: Any) -> bool:
    """``LightningCLI._parse_ckpt_path`` with the user's values winning over the checkpoint's.

    Lightning parses ``--ckpt_path``'s ``hyper_parameters`` *on top of* the parsed command line and
    ``--config`` files (Lightning issue #20801; fix proposed in #21455, open in 2.6), so every ``--model.*``
    value a user passes on a resume (``on_schedule_change``, ``label_smoothing``...) is silently dropped.
    Here the checkpoint's values become the model's defaults in the subcommand's parser (reached through the
    private ``LightningCLI._parser``: there is no public accessor) and the same arguments are parsed again,
    so the order is: command line > ``--config`` files > checkpoint > the parser's own defaults. A subcommand
    without any model option (``test --ckpt_path X``) still rebuilds the model from the checkpoint alone.

    ``args`` are the arguments ``LightningCLI.parse_arguments`` was given (None: ``sys.argv``). Returns
    whether the config was parsed again (False: no checkpoint file, or one without hyperparameters).
    ``tests/test_lightning_contract.py`` checks that Lightning still overrides the user's values; when it
    stops doing so, delete this function and call ``super()._parse_ckpt_path()``.
    """
    subcommand = cli.config.get("subcommand")
    if not subcommand:
        return False
    ckpt_path = cli.config[subcommand].get("ckpt_path")
    if not ckpt_path or not Path(ckpt_path).is_file():
        return False
    hparams = dict(torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {}))
    hparams.pop("_instantiator", None)
    if not hparams:
        return False
    if "_class_path" in hparams:  # subclass-mode models: the model class itself comes from the checkpoint
        hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        defaults = {"model": hparams}
    else:
        defaults = {f"model.{key}": value for key, value in hparams.items()}
    cli._parser(subcommand).set_defaults(defaults)
    cli.parse_arguments(cli.parser, args)
    return True
