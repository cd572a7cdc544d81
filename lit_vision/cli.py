"""The command line: ``python train.py fit|validate|test|predict --config ...`` (LightningCLI).

Defaults that every run gets, each overridable from YAML or flags:

* ``checkpoint``: ModelCheckpoint on ``val/acc`` (``best.ckpt``) plus ``last.ckpt``, written atomically (the
  ``AtomicCheckpointIO`` plugin, added to ``trainer.plugins`` unless one is given),
* ``interrupt_checkpoint``: ``interrupted.ckpt`` when ``fit`` stops on SIGTERM, Ctrl+C or an error,
* ``prediction_writer``: CSV of predictions in the run directory for ``predict``,
* ``throughput``: training images/s and seconds per epoch (``perf/*`` in ``metrics.csv``),
* ``lr_monitor``: the learning rate of every optimizer step (``lr-<Optimizer>`` in ``metrics.csv``),
* ``trainer.logger``: CSVLogger under ``trainer.default_root_dir`` when set, else ``runs/`` (``metrics.csv``
  holds every logged metric; a ``save_dir`` given to the logger wins),
* ``wandb`` (unset by default): a W&B logger *next to* the CSV logger (``configs/logger/wandb.yaml``); a
  resumed ``fit`` logs to the W&B run of its checkpoint,
* ``seed_everything: 0``.

``--ckpt_path last`` picks the newest ``last*.ckpt`` / ``interrupted.ckpt`` of any run directory of this
experiment (``<save_dir>/<name>/*/checkpoints``): a resumed run writes to a new run directory, so the
interrupted run's files and logs are never overwritten.

Optional training tricks, each under its own top-level key (off when unset), so that composing several
``--config configs/tricks/*.yaml`` files keeps all of them (a later file's ``trainer.callbacks`` list would
replace an earlier one's): ``ema``, ``mixing``, ``fgsm``, ``tta``, ``wandb_media``, ``finetuning``,
``early_stopping``.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.plugins import LayerSync
from lightning.pytorch.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from lit_vision.apps import runs_on_cuda
from lit_vision.callbacks import (
    EMA,
    FGSM,
    AtomicCheckpointIO,
    CheckpointWriteError,
    EpochThroughput,
    HeadFirstFinetuning,
    InterruptCheckpoint,
    LastCheckpoint,
    MixUpCutMix,
    PredictionWriter,
    SafeModelCheckpoint,
    TestTimeAugmentation,
    WandbMediaLogger,
)
from lit_vision.callbacks.progress_bar import add_default_progress_bar
from lit_vision.console import quiet_lightning, use_model_summary
from lit_vision.data import DatasetError, ImageDataModule
from lit_vision.errors import ConfigError
from lit_vision.lightning_workarounds import LightningCLIHooks
from lit_vision.loggers import CSVLogger, WandbLogger, WandbRunId
from lit_vision.models import ImageClassifier, ScheduleChangeError
from lit_vision.models.inference.classifier_loading import CheckpointError, read_checkpoint
from lit_vision.plugins import SyncBatchNorm

__all__ = ["TRICK_KEYS", "LitVisionCLI", "main", "run"]

#: top-level config key -> callback class of the optional tricks
TRICK_KEYS: dict[str, type] = {
    "ema": EMA,
    "mixing": MixUpCutMix,
    "fgsm": FGSM,
    "tta": TestTimeAugmentation,
    "wandb_media": WandbMediaLogger,
    "finetuning": HeadFirstFinetuning,
    "early_stopping": EarlyStopping,
}


def _has(accelerator: str) -> bool:
    """Whether Lightning finds a device for ``accelerator`` (``gpu``: CUDA, else Apple's MPS), without
    initializing CUDA in this process (DDP forks after this)."""
    cuda, mps = CUDAAccelerator.is_available(), MPSAccelerator.is_available()
    return {"cuda": cuda, "mps": mps, "gpu": cuda or mps}[accelerator]


def _launched_per_node() -> bool:
    """Whether this process was started by a multi-node launcher (Lightning's cluster environments: torchrun,
    SLURM, LSF) or by hand with the node's rank and the master's address set."""
    environments = (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment)  # Kubeflow: not detectable
    if any(env.detect() for env in environments):
        return True
    return "NODE_RANK" in os.environ and "MASTER_ADDR" in os.environ


def _under_root(logger: Any, root: str | os.PathLike[str]) -> Any:
    """``trainer.logger``, each lit_vision ``CSVLogger`` whose folder was not given moved under ``root``."""
    if isinstance(logger, list | tuple):
        return [_under_root(lg, root) for lg in logger]
    if isinstance(logger, CSVLogger) and not logger.save_dir_given:
        return logger.under(root)
    return logger


class SaveConfigToLoggers(SaveConfigCallback):
    """Write ``config.yaml`` to the run directory (as Lightning does) and send the resolved config to W&B."""

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, LightningWandbLogger) and trainer.is_global_zero:
                # through JSON: paths and other objects become strings W&B can store
                config = json.loads(json.dumps(self.config.as_dict(), default=str))
                logger.experiment.config.update(config, allow_val_change=True)


class LitVisionCLI(LightningCLIHooks):
    """LightningCLI with the project's links and default callbacks."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Known only once the datamodule exists (ImageFolder trees are scanned), hence apply_on="instantiate".
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.classes", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.channels_last", "model.channels_last")
        # Callbacks under their own keys, so composing configs that set trainer.callbacks keeps them.
        parser.add_lightning_class_args(SafeModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        # Training images/s and seconds per epoch in metrics.csv (what lit_vision.compare reports), and the
        # learning rate of every optimizer step (how a schedule behaved, e.g. after a resume).
        parser.add_lightning_class_args(EpochThroughput, "throughput")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.set_defaults(
            {
                "trainer.logger": {
                    # save_dir unset: trainer.default_root_dir when given, else runs/
                    "class_path": "lit_vision.loggers.CSVLogger",
                    "init_args": {"name": "default"},
                },
                "trainer.max_epochs": 20,
            }
        )
        # W&B next to the CSV logger (not instead of it), under its own key so configs compose.
        parser.add_subclass_arguments(LightningWandbLogger, "wandb", required=False, fail_untyped=False)
        for key, callback in TRICK_KEYS.items():
            # subclass mode: off (None) by default; a trick file sets class_path and init_args
            parser.add_lightning_class_args(callback, key, subclass_mode=True, required=False)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.get("trainer", {})
        if self.subcommand == "fit":
            for key in ("max_epochs", "max_steps"):
                if trainer.get(key) == 0:
                    raise ConfigError(
                        f"--trainer.{key} 0: fit would train nothing and exit. Give the number of "
                        f"{key.removeprefix('max_').replace('steps', 'optimizer steps')} to train (>= 1), "
                        "or use `validate`/`test` to evaluate a checkpoint without training."
                    )
        accelerator = trainer.get("accelerator")
        if isinstance(accelerator, str) and accelerator in ("gpu", "cuda", "mps") and not _has(accelerator):
            raise ConfigError(
                f"--trainer.accelerator {accelerator}: this machine has no such device "
                "(configs/trainer/gpu.yaml asks for a GPU). Leave that config out, or set "
                "--trainer.accelerator auto, to train on the CPU."
            )
        if (trainer.get("num_nodes") or 1) > 1 and not _launched_per_node():
            raise ConfigError(
                f"--trainer.num_nodes {trainer.get('num_nodes')}: a multi-node run is started once per node "
                "by a launcher (torchrun --nnodes N --node_rank R --master_addr HOST ..., or SLURM srun), "
                "which tells each process its node; started directly it would wait forever for the others. "
                "See configs/trainer/ddp_multinode.yaml, or drop num_nodes to train on this machine."
            )

    def after_instantiate_classes(self) -> None:
        # A backbone given by class_path reaches the model as a module object, which save_hyperparameters
        # leaves out: store its {class_path, init_args} so checkpoints can rebuild it (load_classifier).
        config = self.config[self.subcommand] if self.subcommand else self.config
        backbone = config.get("model", {}).get("backbone")
        if isinstance(backbone, Namespace) and "class_path" in backbone:
            self.model.hparams["backbone"] = backbone.clone().as_dict()
        super().after_instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        # Unset optional trick keys are None: drop them instead of handing None to the Trainer.
        config = self.config_value(self.config_init, "trainer", default={})
        keys = self.subcommand_parser(self.subcommand).callback_keys
        extra = [self.config_value(self.config_init, key) for key in keys]
        extra = [c for c in extra if c is not None]
        if config.get("logger") is False:  # the LR monitor refuses to run without a logger
            extra = [c for c in extra if not isinstance(c, LearningRateMonitor)]
        config = {**config, **kwargs}
        use_model_summary(config, extra)
        add_default_progress_bar(config, extra)  # the step loss shown without a host read per step
        root = config.get("default_root_dir")
        logger = config.get("logger")
        if root is not None:
            # A logger without a folder of its own writes under the trainer's root dir, as Lightning's
            # default logger would (the CLI's configured CSVLogger would otherwise keep ./runs).
            config["logger"] = logger = _under_root(logger, root)
        wandb = self.config_value(self.config_init, "wandb")
        if wandb is not None:
            loggers = (
                [*logger] if isinstance(logger, list) else [logger] if isinstance(logger, Logger) else []
            )
            first_dir = next((lg.save_dir for lg in loggers if lg.save_dir is not None), root)
            if isinstance(wandb, WandbLogger) and wandb.save_dir is None and first_dir is not None:
                wandb.place_under(os.fspath(first_dir))  # runs/wandb/ beside runs/<name>/version_N/
            config["logger"] = [*loggers, wandb]
            extra.append(WandbRunId())
        if config.get("sync_batchnorm") and not runs_on_cuda(config.get("accelerator", "auto")):
            # torch's SyncBatchNorm raises on CPU tensors: the same config then trains on CPU with
            # per-process BatchNorm statistics instead of failing at the first batch.
            rank_zero_warn(
                "trainer.sync_batchnorm: SyncBatchNorm runs on CUDA only; this run is on CPU, so BatchNorm "
                "statistics stay per process (set trainer.sync_batchnorm: false to silence this)."
            )
            config["sync_batchnorm"] = False
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if config.get("sync_batchnorm") and not any(isinstance(plugin, LayerSync) for plugin in plugins):
            # Lightning's own conversion drops what timm's BatchNorm+activation layers add (plugins/)
            plugins.append(SyncBatchNorm())
            config["plugins"] = plugins
        strategy = config.get("strategy", "auto")
        strategy_name = (strategy if isinstance(strategy, str) else type(strategy).__name__).lower()
        sharded = any(name in strategy_name for name in ("fsdp", "deepspeed", "model_parallel"))
        if not sharded and not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            # every checkpoint write (best, last, interrupted) goes to <file>.tmp, then is renamed over
            # <file>; sharded strategies write directories with their own IO and are left alone
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        return self.build_trainer(config, extra)

    # ------------------------------------------------------------------ --ckpt_path last
    def _resolve_last_checkpoint(self) -> None:
        """``ckpt_path: last`` -> the newest last/interrupted checkpoint of this experiment's run dirs.

        Lightning only looks in the new run's own directory, which a fresh CLI run has just created empty.
        """
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last" or not self.trainer.loggers:
            return
        logger = self.trainer.loggers[0]
        if logger.save_dir is None:
            return
        experiment = Path(logger.save_dir) / str(logger.name)
        dirs = set(experiment.glob("*/checkpoints"))
        for callback in self.trainer.checkpoint_callbacks:  # explicit checkpoint dirpaths count too
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                dirs.add(Path(callback.dirpath))
        candidates = [
            path
            for folder in dirs
            for path in folder.glob("*.ckpt")
            if path.name.startswith("last") or path.name == "interrupted.ckpt"
        ]
        if not candidates:
            rank_zero_warn(
                f"--ckpt_path last: no last*.ckpt or interrupted.ckpt under {experiment}/*/checkpoints; "
                "starting from scratch."
            )
            config["ckpt_path"] = None
            return
        newest = max(candidates, key=lambda p: (p.stat().st_mtime, p.name == "interrupted.ckpt"))
        rank_zero_info(f"--ckpt_path last: resuming from {newest}")
        config["ckpt_path"] = os.fspath(newest)

    def check_ckpt_path(self, config: Any) -> bool:
        # LightningCLI reads --ckpt_path's hyperparameters while parsing (as defaults under the user's
        # values, lightning_workarounds): check the file first so a broken or untrusted one gets the same
        # message as below.
        return bool(self._check_checkpoint(config))

    def merge_ckpt_hparams(self) -> None:
        try:
            super().merge_ckpt_hparams()
        except pickle.UnpicklingError:  # trusted by --weights_only false: train with the config's hparams
            rank_zero_warn(
                "--ckpt_path holds pickled objects: its hyperparameters are not merged into the config."
            )

    def _check_checkpoint(self, config: Any = None) -> dict[str, str | None] | None:
        """A ``--ckpt_path`` that is missing, truncated, not a Lightning checkpoint, or that needs full
        unpickling (``--weights_only false`` allows it) ends with one clear message, not a traceback.

        Returns what the CLI needs of the file (its W&B run id), read once per path: the check runs while
        parsing (before LightningCLI reads the file's hyperparameters) and again before the run, when
        ``last`` has been resolved to a file."""
        config = self.config_init[self.subcommand] if config is None else config
        path = config.get("ckpt_path")
        if path is None or path in ("best", "last", "hpc", "registry") or "://" in str(path):
            return None  # Lightning's own keys and remote files: Lightning reads and checks them
        checked = getattr(self, "_checked_checkpoint", None)
        if checked is not None and checked[0] == path:
            return checked[1]
        if not Path(path).is_file():
            raise CheckpointError(f"--ckpt_path {path} does not exist.")
        checkpoint = read_checkpoint(
            path, trusted=config.get("weights_only") is False, opt_in="--weights_only false"
        )
        if "state_dict" not in checkpoint:
            raise CheckpointError(
                f"{path} is not a Lightning checkpoint (no state_dict): --ckpt_path resumes or evaluates "
                "checkpoints written by train.py. To start training from a file of weights, use "
                "--model.pretrained_weights."
            )
        info = {"wandb_run_id": WandbRunId.from_checkpoint(checkpoint)}  # not the weights: kept until the run
        self._checked_checkpoint = (path, info)
        return info

    def _before_run(self) -> None:
        self._resolve_last_checkpoint()
        info = self._check_checkpoint()
        run_id = info["wandb_run_id"] if info and self.subcommand == "fit" else None
        for logger in self.trainer.loggers:
            if run_id and isinstance(logger, WandbLogger):
                rank_zero_info(f"W&B: resuming run {run_id}")
                logger.resume_run(run_id)

    before_fit = before_validate = before_test = before_predict = _before_run


def main(args: ArgsType = None, run: bool = True) -> LitVisionCLI:
    """Run the CLI; ``args`` (a list, as on the command line) lets tests drive it from Python."""
    quiet_lightning()
    # The batched data path serves in-memory tensor slices: DataLoader workers would only add overhead.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    if runs_on_cuda():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls/convs on Ampere and newer
    return LitVisionCLI(
        ImageClassifier,
        ImageDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "yaml"},
        # LightningCLI would add --optimizer/--lr_scheduler keys that silently replace the model's
        # configure_optimizers (no-decay groups, total_steps and batch_size fills): model.optimizer and
        # model.scheduler are the one way to set them, and the others are unknown keys.
        auto_configure_optimizers=False,
    )


def _config_error(err: BaseException) -> ConfigError | None:
    """The ConfigError behind ``err``: jsonargparse re-raises a refusal from an optional trick callback's
    ``__init__`` (the keys are ``Optional[...]``) as a plain ValueError caused by it."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ConfigError):
        cause = cause.__cause__
    return cause


def run() -> None:
    """Console entry point: dataset problems, refused option values, unreadable or unwritable checkpoints and
    refused resumes end with one ``error:`` line and exit code 1, not a traceback."""
    try:
        main()
    except (
        DatasetError,
        ScheduleChangeError,
        CheckpointError,
        CheckpointWriteError,
        ConfigError,
        # Lightning's own refusal of a trainer setting: its message is the user's to read, its stack is not
        MisconfigurationException,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    except ValueError as err:
        refusal = _config_error(err)  # a refusal that jsonargparse wrapped
        if refusal is None:
            raise
        print(f"error: {refusal}", file=sys.stderr)
        raise SystemExit(1) from None
    except SIGTERMException:
        # Lightning ends a SIGTERM'd run with a bare SystemExit, i.e. exit status 0: a scheduler or script
        # would take the stopped run for a finished one. 128 + 15 is the shell's code for "killed by SIGTERM".
        raise SystemExit(128 + signal.SIGTERM) from None


if __name__ == "__main__":
    run()
