"""Optimizer and scheduler come from ``model.optimizer`` / ``model.scheduler`` only, and monitored schedulers
(``ReduceLROnPlateau``) step on the metric ``model.scheduler_monitor`` names."""

from __future__ import annotations

import pytest
from helpers import TinyCli

PLATEAU = "torch.optim.lr_scheduler.ReduceLROnPlateau"


@pytest.mark.parametrize(
    "flag", ["--optimizer=torch.optim.Adam", "--lr_scheduler=torch.optim.lr_scheduler.StepLR"]
)
def test_lightning_optimizer_flags_are_unknown(
    flag: str, run_cli: TinyCli, capsys: pytest.CaptureFixture[str]
) -> None:
    """LightningCLI's --optimizer/--lr_scheduler would replace configure_optimizers with only a warning."""
    with pytest.raises(SystemExit) as stop:
        run_cli("fit", flag, "--trainer.max_epochs=1")
    assert stop.value.code == 2
    assert flag.split("=")[0].lstrip("-") in capsys.readouterr().err
    assert not run_cli.runs.exists()  # refused while parsing, before any training


def test_reduce_on_plateau_steps_on_the_monitored_metric(run_cli: TinyCli) -> None:
    # threshold 1e9 (absolute): only the first epoch counts as an improvement, so with patience 0 every later
    # epoch halves the LR: 3 epochs -> lr x 0.5 ** 2. The scheduler raises if the metric is not passed to it.
    cli = run_cli(
        "fit",
        "--trainer.max_epochs=3",
        "--model.optimizer=torch.optim.SGD",
        "--model.optimizer.lr=0.1",
        f"--model.scheduler={PLATEAU}",
        "--model.scheduler.init_args.patience=0",
        "--model.scheduler.init_args.factor=0.5",
        "--model.scheduler.init_args.threshold=1e9",
        "--model.scheduler.init_args.threshold_mode=abs",
        "--model.scheduler_monitor=val/acc",
    )
    config = cli.trainer.lr_scheduler_configs[0]
    assert config.monitor == "val/acc" and config.interval == "epoch"
    val_acc = [float(r["val/acc"]) for r in cli.metrics() if r["val/acc"]]
    assert len(val_acc) == 3 and config.scheduler.best == pytest.approx(val_acc[0])  # it watched val/acc
    for group in cli.trainer.optimizers[0].param_groups:
        assert group["lr"] == pytest.approx(0.1 * 0.5**2)


def test_reduce_on_plateau_names_a_missing_metric(run_cli: TinyCli) -> None:
    with pytest.raises(Exception, match="val/no_such_metric"):
        run_cli(
            "fit",
            "--trainer.max_epochs=1",
            f"--model.scheduler={PLATEAU}",
            "--model.scheduler_monitor=val/no_such_metric",
        )
