"""Resuming into a run of another length: refused by default, `extend` and `restart` on request.

Through the CLI on tiny data; the LR of every optimizer step comes from `metrics.csv` (the CLI's default
LearningRateMonitor) and is compared with the schedule docs/reliability.md documents, built here with torch.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, CliRun, TinyCli, run_python

from lit_vision.cli import run
from lit_vision.models import WarmupCosineLR

STEPS_PER_EPOCH = 6  # tiny_folder: 60 images - 12 held out = 48 = 6 batches of 8
MAX_LR = 0.2  # configs/cifar10_compact.yaml: OneCycleLR(max_lr=0.2, pct_start=0.25)

SCHEDULERS = {
    "onecycle": [],  # the base config's own
    "warmup_cosine": [
        "--model.scheduler.class_path=lit_vision.models.WarmupCosineLR",
        "--model.scheduler.init_args.warmup_steps=0.25",
    ],
}


COMPACT = ["configs/cifar10_compact.yaml"]


def schedule(scheduler: str) -> list[str]:
    return ["--trainer.log_every_n_steps=1", *SCHEDULERS[scheduler]]  # the LR monitor logs every step


def fit(run_cli: TinyCli, scheduler: str, *more: str) -> CliRun:
    """configs/cifar10_compact.yaml on the tiny data, with ``scheduler`` and its LR logged at every step."""
    return run_cli("fit", *schedule(scheduler), *more, configs=COMPACT)


def lr_by_step(run_dir: Path) -> dict[int, float]:
    """LR of the no-decay parameter group (pg2) at every optimizer step logged in ``metrics.csv``."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    column = next(c for c in rows[0] if c.startswith("lr-SGD"))
    return {int(r["step"]): float(r[column]) for r in rows if r.get(column)}


def reference(scheduler: str, total: int, warmup_steps: float, steps: int) -> list[float]:
    """LRs of steps 0..steps-1 of a fresh schedule of ``total`` steps whose warmup lasts ``warmup_steps``."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=MAX_LR, momentum=0.9, nesterov=True)
    if scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=MAX_LR, total_steps=total, pct_start=warmup_steps / total
        )
    else:
        sched = WarmupCosineLR(opt, total_steps=total, warmup_steps=warmup_steps / total)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def first_run(run_cli: TinyCli, scheduler: str, steps: int) -> Path:
    cli = fit(run_cli, scheduler, f"--trainer.max_steps={steps}")
    assert cli.trainer.global_step == steps
    return cli.run_dir


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_longer_run_is_refused_with_a_message(
    run_cli: TinyCli, scheduler: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    first = first_run(run_cli, scheduler, STEPS_PER_EPOCH)
    last_before = (first / "checkpoints" / "last.ckpt").read_bytes()
    argv = ["train.py", *run_cli.argv("fit", *schedule(scheduler), configs=COMPACT)]
    monkeypatch.setattr(sys, "argv", [*argv, "--trainer.max_steps=12", "--ckpt_path=last"])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "error: The checkpoint's LR schedule" in err
    assert "built for a run of 6 optimizer steps" in err and "make it 12 optimizer steps" in err
    assert "--model.on_schedule_change extend" in err and "restart" in err
    # Nothing was trained or written: the refused run left no interrupt checkpoint to be resumed next time.
    assert not list(run_cli.runs.glob("*/*/checkpoints/interrupted.ckpt"))
    assert (first / "checkpoints" / "last.ckpt").read_bytes() == last_before


def ckpt_arg(first: Path, how: str) -> str:
    """``--ckpt_path`` as ``last`` (the CLI resolves it after parsing) or as the file itself (LightningCLI
    then merges the file's hyperparameters while parsing: they must not replace the options given here)."""
    return "--ckpt_path=last" if how == "last" else f"--ckpt_path={first / 'checkpoints' / 'last.ckpt'}"


def resume(
    run_cli: TinyCli, scheduler: str, first: Path, how: str, steps: int, policy: str
) -> tuple[CliRun, dict[int, float]]:
    """Resume ``first`` (named as ``how`` says) into a run of ``steps`` optimizer steps under
    ``--model.on_schedule_change policy``: the resumed run, and the LR of each of its steps."""
    change = f"--model.on_schedule_change={policy}"
    resumed = fit(run_cli, scheduler, f"--trainer.max_steps={steps}", ckpt_arg(first, how), change)
    assert resumed.trainer.global_step == steps
    return resumed, lr_by_step(resumed.run_dir)


@pytest.mark.parametrize("how", ["last", "file"])
@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_extend_stretches_the_decay_and_keeps_the_warmup(run_cli: TinyCli, scheduler: str, how: str) -> None:
    first = first_run(run_cli, scheduler, 8)
    warmup = 0.25 * 8  # steps, as the first run had it
    assert list(lr_by_step(first).values()) == pytest.approx(reference(scheduler, 8, warmup, 8), rel=1e-6)

    _, lrs = resume(run_cli, scheduler, first, how, 16, "extend")
    assert sorted(lrs) == list(range(8, 16))
    # The curve of a 16-step run with the same 2-step warmup, from step 8 on: the decay restarts higher.
    expected = reference(scheduler, 16, warmup, 16)[8:]
    assert [lrs[s] for s in range(8, 16)] == pytest.approx(expected, rel=1e-6)
    assert lrs[8] > lr_by_step(first)[7]


@pytest.mark.parametrize("how", ["last", "file"])
@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_restart_runs_a_fresh_schedule_over_the_remaining_steps(
    run_cli: TinyCli, scheduler: str, how: str
) -> None:
    first = first_run(run_cli, scheduler, 8)
    weights = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    resumed, lrs = resume(run_cli, scheduler, first, how, 20, "restart")
    expected = reference(scheduler, 12, 0.25 * 12, 12)  # warmup included, over the 12 steps left
    assert [lrs[s] for s in range(8, 20)] == pytest.approx(expected, rel=1e-6)
    # The weights were kept (training moved on from them, it did not start from a new init).
    first_conv = next(k for k in weights if k.endswith("weight") and weights[k].ndim == 4)
    moved = resumed.model.state_dict()[first_conv].cpu()
    assert not torch.equal(moved, weights[first_conv])
    assert (moved - weights[first_conv]).abs().mean() < weights[first_conv].abs().mean()


def test_same_length_resumes_exactly(run_cli: TinyCli) -> None:
    """The horizon check leaves a same-length resume alone: weights and LR curve as in a straight run."""
    epochs = "--trainer.max_epochs=2"
    straight = fit(run_cli, "onecycle", epochs).run_dir
    stop = [{"class_path": "helpers.StopAt", "init_args": {"step": STEPS_PER_EPOCH + 1, "how": "keyboard"}}]
    with pytest.raises(SystemExit):  # Ctrl+C right after epoch 0's last step and its checkpoint
        fit(run_cli, "onecycle", epochs, f"--trainer.callbacks={json.dumps(stop)}")
    epoch_end = straight.parent / "version_1" / "checkpoints" / "last.ckpt"
    resumed = fit(run_cli, "onecycle", epochs, f"--ckpt_path={epoch_end}")
    assert resumed.trainer.global_step == 12
    resumed_lrs, straight_lrs = lr_by_step(resumed.run_dir), lr_by_step(straight)
    # The LR of each remaining step, in order. (Lightning logs the first step after an epoch-end resume
    # under a step key one higher than the straight run does; the values are the schedule's.)
    assert [resumed_lrs[s] for s in sorted(resumed_lrs)] == [
        straight_lrs[s] for s in sorted(straight_lrs) if s >= STEPS_PER_EPOCH
    ]
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(resumed.checkpoints / "last.ckpt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(
    "extra",
    [
        ["--model.scheduler=null"],  # constant LR
        ["--config", str(ROOT / "configs" / "ablations" / "no_tricks.yaml")],  # MultiStepLR per epoch
    ],
    ids=["constant", "epoch_milestones"],
)
def test_schedules_without_a_horizon_resume_into_a_longer_run(run_cli: TinyCli, extra: list[str]) -> None:
    fit(run_cli, "onecycle", *extra, "--trainer.max_epochs=1")
    resumed = fit(run_cli, "onecycle", *extra, "--trainer.max_epochs=3", "--ckpt_path=last")
    assert resumed.trainer.global_step == 3 * STEPS_PER_EPOCH


# ------------------------------------------------------------------ the user's values win on a resume
def test_the_policy_given_with_a_checkpoint_file_is_used_by_train_py(
    run_cli: TinyCli, tmp_path: Path
) -> None:
    """The refusal's own advice, followed on the command line with the checkpoint named as a file, trains."""
    first = first_run(run_cli, "onecycle", 6)
    argv = run_cli.argv("fit", *schedule("onecycle"), configs=COMPACT)
    ckpt = f"--ckpt_path={first / 'checkpoints' / 'last.ckpt'}"
    for policy in ("extend", "restart"):
        change = f"--model.on_schedule_change={policy}"
        code, output = run_python(
            ROOT / "train.py", *argv, "--trainer.max_steps=9", ckpt, change, cwd=tmp_path
        )
        assert code == 0, output[-2000:]
        assert f"on_schedule_change={policy}: the schedule is rebuilt" in output


CONSTANT_LR = "--model.scheduler=null"


@pytest.mark.parametrize("where", ["command_line", "config_file"])
def test_a_new_learning_rate_on_resume_is_the_one_the_optimizer_uses(
    run_cli: TinyCli, tmp_path: Path, where: str
) -> None:
    """Constant LR: a resume with a changed lr trains with it (the restored optimizer state held the old)."""
    first = fit(run_cli, "onecycle", CONSTANT_LR, "--trainer.max_steps=6").run_dir
    if where == "config_file":
        fragment = tmp_path / "finetune.yaml"
        fragment.write_text("model:\n  optimizer:\n    init_args: {lr: 0.05}\n")
        change = ["--config", str(fragment)]
    else:
        change = ["--model.optimizer.init_args.lr=0.05"]
    last = f"--ckpt_path={first / 'checkpoints' / 'last.ckpt'}"
    resumed = fit(run_cli, "onecycle", CONSTANT_LR, *change, "--trainer.max_steps=9", last)
    assert resumed.trainer.global_step == 9
    assert [g["lr"] for g in resumed.trainer.optimizers[0].param_groups] == [0.05, 0.05]
    lrs = lr_by_step(resumed.run_dir)
    assert [lrs[s] for s in sorted(lrs)] == [0.05, 0.05, 0.05]
    assert set(lr_by_step(first).values()) == {MAX_LR}  # the first run's own LR, for contrast


def test_changed_settings_under_a_schedule_are_refused_then_restarted(
    run_cli: TinyCli, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Same horizon, new weight decay: the restored optimizer and schedule state would keep the old value,
    so the default policy refuses with the change named; ``restart`` applies it with a fresh schedule."""
    steps = "--trainer.max_steps=16"
    stop = [{"class_path": "helpers.StopAt", "init_args": {"step": 5, "how": "keyboard"}}]
    with pytest.raises(SystemExit):  # Ctrl+C after step 5: interrupted.ckpt mid-schedule
        fit(run_cli, "onecycle", steps, f"--trainer.callbacks={json.dumps(stop)}")
    interrupted = next(run_cli.runs.glob("*/version_0/checkpoints/interrupted.ckpt"))
    changed = [steps, "--model.optimizer.init_args.weight_decay=0.001", f"--ckpt_path={interrupted}"]
    argv = run_cli.argv("fit", *schedule("onecycle"), *changed, configs=COMPACT)
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "optimizer.weight_decay: 0.0005 -> 0.001" in err and "--model.on_schedule_change restart" in err
    resumed = fit(run_cli, "onecycle", *changed, "--model.on_schedule_change=restart")
    assert resumed.trainer.global_step == 16
    groups = resumed.trainer.optimizers[0].param_groups
    assert [g["weight_decay"] for g in groups] == [0.001, 0.0]  # the no-decay group stays undecayed
    lrs = lr_by_step(resumed.run_dir)
    remaining = 16 - 5  # a warm-up of 2.75 steps: no short-run adjustment of pct_start
    assert [lrs[s] for s in sorted(lrs)] == pytest.approx(
        reference("onecycle", remaining, 0.25 * remaining, remaining), rel=1e-6
    )


def test_test_with_a_checkpoint_rebuilds_the_model_from_it_alone(run_cli: TinyCli) -> None:
    """No model options on the command line: every model value comes from the checkpoint (here a backbone
    width and label smoothing that differ from the parser's defaults; channels_last follows its data link)."""
    first = first_run(run_cli, "onecycle", 2)
    tested = run_cli("test", f"--ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    assert tested.model.hparams.backbone_kwargs == {"width": 1.5}
    assert tested.model.hparams.label_smoothing == 0.2


def test_changed_settings_compare_classes_by_name_not_module_path() -> None:
    """A checkpoint written before a module moved (``lit_vision.models.schedulers`` ->
    ``lit_vision.models.training.schedulers``) resumes as the same scheduler; another class or value
    does not."""
    from lit_vision.models.training.schedule_resume import changed_settings

    then = {
        "optimizer": {"class": "torch.optim.sgd.SGD", "args": {"lr": 0.1}},
        "scheduler": {"class": "lit_vision.models.schedulers.WarmupCosineLR", "args": {}},
    }
    now = {
        "optimizer": {"class": "torch.optim.sgd.SGD", "args": {"lr": 0.1}},
        "scheduler": {"class": "lit_vision.models.training.schedulers.WarmupCosineLR", "args": {}},
    }
    assert changed_settings(then, now) == []
    now["scheduler"]["class"] = "torch.optim.lr_scheduler.OneCycleLR"
    now["optimizer"]["args"]["lr"] = 0.2
    assert changed_settings(then, now) == [
        "optimizer.lr: 0.1 -> 0.2",
        "scheduler: lit_vision.models.schedulers.WarmupCosineLR -> torch.optim.lr_scheduler.OneCycleLR",
    ]
