"""Every read or write of a private Lightning member, in one place: workarounds for open Lightning bugs (each
with its issue) and the state Lightning keeps without a public accessor. Each use says which public
alternative is missing; ``tests/test_lightning_contract.py`` pins every member named here, so an upgrade
that moves one fails there first. Every layer may import this module: it imports nothing of lit_vision.
Delete a workaround when the Lightning release it needs is the minimum in ``pyproject.toml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger

__all__ = [
    "EMAWeightAveragingState",
    "LightningCLIHooks",
    "attached_trainer",
    "estimated_stepping_batches",
    "parse_checkpoint_hparams_as_defaults",
    "set_wandb_init",
    "uses_distributed_sampler",
]


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


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The Trainer ``module`` is attached to, or ``None``. ``LightningModule.trainer`` raises when there is
    none (a module called outside ``fit``, e.g. by the apps or a benchmark); ``_trainer`` is the attribute
    behind it, and no public accessor returns ``None`` instead."""
    return module._trainer


def uses_distributed_sampler(trainer: L.Trainer) -> bool:
    """``Trainer(use_distributed_sampler=...)`` as the trainer resolved it: whether Lightning would replace a
    loader's sampler by a ``DistributedSampler``. The Trainer keeps it in its private accelerator connector
    and exposes no attribute for it."""
    return bool(trainer._accelerator_connector.use_distributed_sampler)


class EMAWeightAveragingState(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging`` with public names for the state it keeps privately, for
    ``lit_vision.callbacks.EMA``: the averaged copy (``_average_model``), the last step and epoch that
    updated it (``_latest_update_step``/``_latest_update_epoch``), and the swap of the average in and out of
    the model around evaluation (``_swap_models``, which :meth:`swap_models` replaces). ``WeightAveraging``
    documents none of them and offers no hook for the swap."""

    @property
    def average_model(self) -> Any:
        """torch's ``AveragedModel`` around a copy of the LightningModule (``None`` before fit's setup)."""
        return self._average_model

    @property
    def latest_update_step(self) -> int:
        return self._latest_update_step

    @latest_update_step.setter
    def latest_update_step(self, step: int) -> None:
        self._latest_update_step = step

    @property
    def latest_update_epoch(self) -> int:
        return self._latest_update_epoch

    @latest_update_epoch.setter
    def latest_update_epoch(self, epoch: int) -> None:
        self._latest_update_epoch = epoch

    def swap_models(self, pl_module: L.LightningModule) -> None:
        """Put the average in place of the model's weights, or back: Lightning calls it at the start and the
        end of every validation epoch. Default: Lightning's own swap."""
        super()._swap_models(pl_module)

    def _swap_models(self, pl_module: L.LightningModule) -> None:
        self.swap_models(pl_module)


def set_wandb_init(logger: WandbLogger, **fields: Any) -> None:
    """Set ``wandb.init`` arguments of a Lightning ``WandbLogger`` after it was built (``dir``, ``id``,
    ``resume``), before its run starts: the CLI knows the run directory and the run id to resume only then.
    Lightning keeps them in ``_wandb_init`` (and mirrors ``dir``/``id`` in ``_save_dir``/``_id``, which its
    ``save_dir``/``version`` return) and takes them only in ``__init__``."""
    if logger._experiment is not None:
        raise RuntimeError("wandb.init arguments must be set before the W&B run starts.")
    logger._wandb_init.update(fields)
    if "dir" in fields:
        logger._save_dir = fields["dir"]
    if "id" in fields:
        logger._id = fields["id"]


class LightningCLIHooks(LightningCLI):
    """``LightningCLI`` with public names for the protected steps ``lit_vision.cli.LitVisionCLI`` builds on:
    reading a (possibly subclass-typed) config value (``_get``), the subcommand's parser (``_parser``),
    building the Trainer with extra callbacks (``_instantiate_trainer``), and the step that merges
    ``--ckpt_path``'s hyperparameters (``_parse_ckpt_path``), which runs while parsing and has no hook.
    The last is replaced here by :meth:`check_ckpt_path` and :meth:`merge_ckpt_hparams`
    (:func:`parse_checkpoint_hparams_as_defaults`, Lightning #20801)."""

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        self._parsed_args = args  # parsed again once a --ckpt_path's hyperparameters are known
        super().parse_arguments(parser, args)

    def config_value(self, config: Any, key: str, default: Any = None) -> Any:
        """``config[subcommand][key]`` (or ``config[key]`` without a subcommand)."""
        return self._get(config, key, default=default)

    def subcommand_parser(self, subcommand: str | None) -> LightningArgumentParser:
        return self._parser(subcommand)

    def build_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> L.Trainer:
        """The Trainer of ``config`` with ``callbacks`` added to the configured ones."""
        return self._instantiate_trainer(config, callbacks)

    def check_ckpt_path(self, config: Any) -> bool:
        """Called while parsing, before ``--ckpt_path``'s hyperparameters are read: whether to read them."""
        return True

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        if config is not None and self.check_ckpt_path(config):
            self.merge_ckpt_hparams()

    def merge_ckpt_hparams(self) -> None:
        """The checkpoint's hyperparameters as defaults under the user's values, parsed again."""
        parse_checkpoint_hparams_as_defaults(self, self._parsed_args)
