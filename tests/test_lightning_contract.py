"""The private Lightning members lit_vision relies on, where Lightning has no public way (see each user).

``pyproject.toml`` caps ``lightning`` below the next minor release; this test is what fails first when an
upgrade renames or reshapes one of them, instead of a checkpoint or W&B run going quietly wrong.
"""

from __future__ import annotations

import inspect

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, WeightAveraging
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger


def test_model_checkpoint_state_keys() -> None:
    """SafeModelCheckpoint.load_state_dict (lit_vision/callbacks/checkpoint.py) reads these keys of
    Lightning's own state_dict to keep the earlier best across a resume into a new run directory."""
    state = ModelCheckpoint(monitor="val/acc").state_dict()
    assert {
        "dirpath",
        "monitor",
        "best_model_score",
        "best_k_models",
        "kth_best_model_path",
        "kth_value",
    } <= set(state)


def test_weight_averaging_privates() -> None:
    """lit_vision.callbacks.EMA builds on these members of Lightning's WeightAveraging."""
    callback = EMAWeightAveraging()
    assert callback._average_model is None
    assert callback._latest_update_step == 0 and callback._latest_update_epoch == -1
    assert list(inspect.signature(EMAWeightAveraging.should_update).parameters) == [
        "self",
        "step_idx",
        "epoch_idx",
    ]
    assert set(callback.state_dict()) == {"latest_update_step"}  # EMA.state_dict extends it
    # EMAWeightAveragingState.swap_models replaces _swap_models, which Lightning calls around validation
    assert list(inspect.signature(EMAWeightAveraging._swap_models).parameters) == ["self", "pl_module"]
    for hook in (WeightAveraging.on_validation_epoch_start, WeightAveraging.on_validation_epoch_end):
        assert "self._swap_models(pl_module)" in inspect.getsource(hook)


def test_the_workarounds_reach_lightnings_state_through_their_public_names() -> None:
    """lit_vision.lightning_workarounds' accessors read the members pinned above, not copies."""
    import lightning as L

    from lit_vision.lightning_workarounds import (
        EMAWeightAveragingState,
        attached_trainer,
        set_wandb_init,
        uses_distributed_sampler,
    )

    callback = EMAWeightAveragingState()
    callback.latest_update_step, callback.latest_update_epoch = 7, 2
    assert (callback._latest_update_step, callback._latest_update_epoch) == (7, 2)
    assert callback.average_model is callback._average_model is None
    module = L.LightningModule()
    assert attached_trainer(module) is None  # where module.trainer would raise
    trainer = Trainer(logger=False, use_distributed_sampler=False)
    assert uses_distributed_sampler(trainer) is False
    logger = WandbLogger(offline=True)
    set_wandb_init(logger, dir="somewhere", id="run-1", resume="allow")
    assert logger.save_dir == "somewhere" and logger.version == "run-1"
    assert logger._wandb_init["resume"] == "allow"


def test_wandb_logger_init_fields(tmp_path) -> None:
    """lit_vision.loggers.WandbLogger.place_under/resume_run set wandb.init's arguments before the run."""
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert {"dir", "id", "resume"} <= set(logger._wandb_init)
    assert logger._save_dir == str(tmp_path) and logger._id is None and logger._experiment is None


def test_trainer_and_cli_privates() -> None:
    # ImageDataModule builds its own samplers only where Lightning would have built distributed ones
    assert hasattr(Trainer(logger=False)._accelerator_connector, "use_distributed_sampler")
    # LitVisionCLI.instantiate_trainer builds the Trainer with the optional trick callbacks
    # LitVisionCLI._parse_ckpt_path checks --ckpt_path before LightningCLI reads its hyperparameters
    for name in ("_get", "_parser", "_instantiate_trainer", "_parse_ckpt_path"):
        assert callable(getattr(LightningCLI, name)), name
    assert list(inspect.signature(LightningCLI._instantiate_trainer).parameters) == [
        "self",
        "config",
        "callbacks",
    ]


def test_fit_loop_privates() -> None:
    """lit_vision.lightning_workarounds.estimated_stepping_batches drops the train loader the fit loop built
    early, so that it is built again (and its saved state loaded) after the restore (Lightning #20550)."""
    from lightning.pytorch.loops.fit_loop import _FitLoop

    loop = Trainer(logger=False).fit_loop
    assert loop._combined_loader is None and loop._data_fetcher is None
    source = inspect.getsource(_FitLoop.setup_data)
    # the early return that skips the state load, and the state load it skips
    assert "if self._combined_loader is not None and not self._should_reload_train_dl" in source
    assert "self._load_combined_loader_states()" in source


def test_torch_privates() -> None:
    # EMA (lit_vision/callbacks/ema.py) copies parameter lists in one call
    assert callable(torch._foreach_copy_)


class _Recorded(Exception):
    """Stops LightningCLI right after parsing, carrying the parsed config."""


def test_lightning_still_lets_checkpoint_hparams_override_the_user(tmp_path) -> None:
    """lit_vision.lightning_workarounds.parse_checkpoint_hparams_as_defaults exists because Lightning's own
    ``_parse_ckpt_path`` parses --ckpt_path's hyperparameters over the user's values (Lightning #20801, PR
    #21455). When this test fails, Lightning has fixed it: delete the workaround."""
    import lightning as L

    class Model(L.LightningModule):
        def __init__(self, smoothing: float = 0.0) -> None:
            super().__init__()
            self.save_hyperparameters()

    class StopAfterParsing(LightningCLI):
        def before_instantiate_classes(self) -> None:
            raise _Recorded(self.config)

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"smoothing": 0.3}}, path)
    try:
        StopAfterParsing(Model, args=["fit", "--model.smoothing=0.1", f"--ckpt_path={path}"])
    except _Recorded as recorded:
        config = recorded.args[0]
    assert config.fit.model.smoothing == 0.3  # the checkpoint's value beat the command line's 0.1
    # what the workaround calls: the subcommand parser and parse_arguments(parser, args)
    assert list(inspect.signature(LightningCLI.parse_arguments).parameters) == ["self", "parser", "args"]
    assert list(inspect.signature(LightningCLI._parser).parameters) == ["self", "subcommand"]
