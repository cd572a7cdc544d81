"""Zero host syncs per training step: nothing in a step reads a device value back on the host (what makes a
GPU wait), recorded on the CPU by ``helpers.HostSyncRecorder``; device-resident data trains the same."""

from __future__ import annotations

import pytest
import torch
from helpers import HostSyncRecorder, TinyCli

SPEEDRUN = [
    "--ema.init_args.step_updates_from_epoch=0",  # the Lookahead EMA updates inside the watched steps
    "--model.backbone_kwargs={widths: [8, 16, 16]}",
]
TRICKS = [f"configs/tricks/{name}.yaml" for name in ("ema", "mixing", "fgsm", "tta")]


@pytest.mark.parametrize(
    ("configs", "flags"),
    [
        pytest.param([], ["--trainer.enable_progress_bar=true"], id="default-with-progress-bar"),
        pytest.param(["configs/speedrun/cifar10_94.yaml"], SPEEDRUN, id="speedrun"),
        pytest.param(TRICKS, [], id="every-trick"),
        pytest.param([], ["--data.device_resident=true", "--model.nonfinite_loss=ignore"], id="resident"),
    ],
)
def test_training_steps_read_nothing_back_from_the_device(
    run_cli: TinyCli, configs: list[str], flags: list[str]
) -> None:
    """Zero host syncs per training step: from one step's start to the next, nothing in the loader, the
    transfer hooks, training_step, the callbacks or Lightning's logging reads a device value on the host
    (see helpers.HostSyncRecorder for what counts, and benchmarks/gpu_check.py for the count on a GPU)."""
    # batch 2: the watched steps lie inside the first epoch (epoch ends may read the device)
    cli = run_cli.build(*flags, "--trainer.max_steps=9", "--data.batch_size=2", configs=configs)
    recorder = HostSyncRecorder(start=2, steps=5)
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 9
    assert recorder.records == [], "\n".join(recorder.records)


@pytest.mark.parametrize("bar", [True, False], ids=["bar-on", "bar-off"])
@pytest.mark.parametrize(
    ("configs", "flags"),
    [
        pytest.param([], [], id="default"),
        pytest.param(["configs/speedrun/cifar10_94.yaml"], SPEEDRUN, id="speedrun"),
    ],
)
def test_no_host_read_between_logging_steps(
    run_cli: TinyCli, configs: list[str], flags: list[str], bar: bool
) -> None:
    """Over three logging intervals (whole loop iterations, the logger connector and the progress bar
    inside): steps that write no logs read nothing; a logging step reads the step loss once for the
    logger and, with the bar on, once for the bar. Lightning's own bar, given the step loss with
    ``prog_bar=True``, converted it at every later step of the epoch."""
    every = 3
    cli = run_cli.build(
        *flags,
        f"--trainer.enable_progress_bar={str(bar).lower()}",
        f"--trainer.log_every_n_steps={every}",
        "--trainer.max_steps=12",
        "--data.batch_size=2",  # the watched steps lie inside the first epoch
        configs=configs,
    )
    recorder = HostSyncRecorder(start=2, steps=9)  # steps 2..10: logging steps 2, 5 and 8
    cli.trainer.callbacks.insert(0, recorder)  # first: its batch start opens the step for every other hook
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    logging_steps = {s for s in range(2, 11) if (s + 1) % every == 0}
    assert logging_steps == {2, 5, 8}
    between = {s: r for s, r in recorder.by_step.items() if s not in logging_steps}
    assert between == {}, between
    groups = len(cli.trainer.optimizers[0].param_groups)
    for step in logging_steps:
        reads = recorder.by_step.get(step, [])
        # what the logs show: the step loss (read by the CSV logger, and once by the bar when it is on)
        # and each parameter group's LR, which Lightning's LR monitor copies to the device
        assert sum("progress_bar.py" in r for r in reads) == bar, reads
        assert sum("lr_monitor.py" in r for r in reads) == groups, reads
        assert len(reads) == 1 + bar + groups, (step, reads)


def test_the_recorder_sees_a_host_read(run_cli: TinyCli) -> None:
    """The check above can fail: a per-step .item() (nonfinite_loss: skip reads the loss every step) and
    torchmetrics' NaN checks are caught."""
    cli = run_cli.build("--model.nonfinite_loss=skip", "--trainer.max_steps=6")
    recorder = HostSyncRecorder(start=2, steps=3)
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert sum("loss_is_finite" in r for r in recorder.records) == 3  # once per watched step


def test_device_resident_data_trains_and_evaluates_the_same(run_cli: TinyCli) -> None:
    """data.device_resident (indices from the loader, gathered on the device) changes where images live,
    not what is trained on: same weights after fit (alternating flip included), same test and predict."""
    weights, tested, predicted = [], [], []
    for resident in (False, True):
        resident_flag = f"--data.device_resident={str(resident).lower()}"
        cli = run_cli.build(resident_flag, "--data.alternating_flip=true", "--trainer.max_epochs=2")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        weights.append({k: v.clone() for k, v in cli.model.state_dict().items()})
        tested.append(cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0])
        predicted.append(torch.cat(cli.trainer.predict(cli.model, datamodule=cli.datamodule)))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert tested[0] == tested[1]
    assert torch.equal(predicted[0], predicted[1])
