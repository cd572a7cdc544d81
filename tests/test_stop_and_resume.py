"""Stopping and resuming a fit (lit_vision.callbacks.checkpoint): mid-epoch SIGTERM and Ctrl+C, exact resumes,
``--ckpt_path last``, checkpoint writes that fail on a full disk, the same seed twice: nothing lost, nothing
silently different. (Resuming into a run of another length: test_resume_schedule.py.)"""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import QUIET, ROOT, TinyCli, TrainBatchLog, folder_args, read_csv, run_python
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_vision.callbacks import AtomicCheckpointIO, CheckpointWriteError

STEPS_PER_EPOCH = 6  # tiny_folder: 60 images - 12 held out = 48 = 6 batches of 8
COMPACT = ["configs/cifar10_compact.yaml"]  # SGD + OneCycleLR stepped per batch


def log_batches() -> str:
    return "--trainer.callbacks=" + json.dumps([{"class_path": "helpers.TrainBatchLog"}])


def stop_at(step: int, how: str) -> str:
    return "--trainer.callbacks=" + json.dumps(
        [
            {"class_path": "helpers.TrainBatchLog"},
            {"class_path": "helpers.StopAt", "init_args": {"step": step, "how": how}},
        ]
    )


@pytest.mark.parametrize(("how", "raised"), [("sigterm", SIGTERMException), ("keyboard", SystemExit)])
def test_stop_mid_epoch_saves_and_last_resumes(
    run_cli: TinyCli, how: str, raised: type[BaseException], monkeypatch
) -> None:
    TrainBatchLog.install(monkeypatch)
    epochs = "--trainer.max_epochs=3"
    run_cli("fit", epochs, log_batches(), "--trainer.logger.init_args.name=straight")
    straight = TrainBatchLog.latest.batches
    assert len(straight) == 3 * STEPS_PER_EPOCH

    with pytest.raises(raised):
        run_cli("fit", epochs, stop_at(8, how))  # mid-epoch 1 (steps 7..12)
    before_stop = TrainBatchLog.latest.batches
    first = run_cli.runs / "default" / "version_0"
    interrupted = first / "checkpoints" / "interrupted.ckpt"
    state = torch.load(interrupted, weights_only=True)
    assert state["global_step"] == 8 and state["epoch"] == 1
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches_served": 2}]
    last_before = (first / "checkpoints" / "last.ckpt").read_bytes()  # end of epoch 0
    metrics_before = (first / "metrics.csv").read_text()

    resumed = run_cli("fit", epochs, log_batches(), "--ckpt_path=last")
    assert Path(resumed.trainer.ckpt_path) == interrupted  # not the older end-of-epoch last.ckpt
    assert resumed.trainer.global_step == 3 * STEPS_PER_EPOCH  # the 4 batches left in epoch 1, then epoch 2
    # exactly the samples a straight run trains on, in its order: nothing seen twice, nothing skipped
    assert before_stop == straight[:8] and TrainBatchLog.latest.batches == straight[8:]
    # a new run directory: the interrupted run's files are untouched
    assert resumed.run_dir.name == "version_1"
    assert (first / "checkpoints" / "last.ckpt").read_bytes() == last_before
    assert (first / "metrics.csv").read_text() == metrics_before
    assert not (resumed.checkpoints / "interrupted.ckpt").exists()  # completed: nothing stale
    assert [int(float(r["epoch"])) for r in resumed.metrics() if r["val/acc"]] == [1, 2]


def test_mid_epoch_resume_with_a_per_step_schedule(run_cli: TinyCli, monkeypatch) -> None:
    """OneCycleLR asks for the run's step count in configure_optimizers, before the checkpoint is restored:
    the loader state must still be loaded (Lightning issue #20550, lit_vision.lightning_workarounds)."""
    TrainBatchLog.install(monkeypatch)

    def fit(*more: str):
        return run_cli("fit", "--trainer.max_epochs=2", *more, configs=COMPACT)

    fit(log_batches(), "--trainer.logger.init_args.name=straight")
    straight = TrainBatchLog.latest.batches
    with pytest.raises(SIGTERMException):
        fit(stop_at(8, "sigterm"))
    resumed = fit(log_batches(), "--ckpt_path=last")
    assert resumed.trainer.global_step == 2 * STEPS_PER_EPOCH
    assert TrainBatchLog.latest.batches == straight[8:]


def test_ckpt_path_last_without_checkpoints_starts_fresh(run_cli: TinyCli) -> None:
    with pytest.warns(UserWarning, match="no last\\*.ckpt or interrupted.ckpt under"):
        fit = run_cli("fit", "--trainer.max_epochs=1", "--ckpt_path=last")
    assert fit.trainer.global_step == STEPS_PER_EPOCH


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def test_resume_at_epoch_end_is_exact(run_cli: TinyCli) -> None:
    """2 epochs straight == 1 epoch, stop, resume, 1 epoch: weights, EMA weights, optimizer state, LR
    schedule position and logged metrics, with MixUp/CutMix, EMA, dropout-free crops/flips and OneCycle."""
    args = [
        "--config=configs/tricks/ema.yaml",
        "--ema.init_args.update_starting_at_step=2",
        "--config=configs/tricks/mixing.yaml",
        "--trainer.max_epochs=2",
        "--trainer.logger.init_args.name=exact",
    ]
    straight = run_cli("fit", *args, configs=COMPACT).run_dir
    with pytest.raises(SystemExit):  # Ctrl+C right after epoch 0's last step and its checkpoint
        run_cli("fit", *args, stop_at(STEPS_PER_EPOCH + 1, "keyboard"), configs=COMPACT)
    epoch_end = straight.parent / "version_1" / "checkpoints" / "last.ckpt"
    assert torch.load(epoch_end, weights_only=True)["global_step"] == STEPS_PER_EPOCH
    resumed = run_cli("fit", *args, f"--ckpt_path={epoch_end}", configs=COMPACT).run_dir

    a, b = final_state(straight), final_state(resumed)
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH
    # with EMA, state_dict holds the average and current_model_state the raw weights
    for part in ("state_dict", "current_model_state"):
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=0, msg=f"{part}: {key}")
    assert a["callbacks"]["EMA"] == b["callbacks"]["EMA"]
    torch.testing.assert_close(a["averaging_state"], b["averaging_state"], rtol=0, atol=0)
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for idx in opt_a:
        for name in opt_a[idx]:
            torch.testing.assert_close(opt_a[idx][name], opt_b[idx][name], rtol=0, atol=0)
    assert a["lr_schedulers"] == b["lr_schedulers"]

    def epoch1(run: Path) -> dict[str, str]:
        return next(r for r in read_csv(run / "metrics.csv") if r["val/acc"] and int(float(r["epoch"])) == 1)

    keys = ["val/acc", "val/loss", "val/acc_best"]
    assert {k: epoch1(straight)[k] for k in keys} == {k: epoch1(resumed)[k] for k in keys}
    train_a = [r for r in read_csv(straight / "metrics.csv") if r["train/loss_epoch"]][-1]
    train_b = [r for r in read_csv(resumed / "metrics.csv") if r["train/loss_epoch"]][-1]
    assert train_a["train/loss_epoch"] == train_b["train/loss_epoch"]


def test_same_seed_twice_same_metrics(run_cli: TinyCli) -> None:
    first, second = (run_cli("fit", "--trainer.max_epochs=2").metrics() for _ in range(2))
    assert any(r["val/acc"] for r in first) and any(r["perf/train_s"] for r in first)

    def seeded(table: list[dict[str, str]]) -> list[dict[str, str]]:
        # perf/* are wall-clock measurements (EpochThroughput): the one thing a seed does not fix
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in table]

    assert seeded(first) == seeded(second)


def test_disk_full_keeps_the_previous_best(run_cli: TinyCli, monkeypatch) -> None:
    """A write that fails half-way (ENOSPC) leaves best.ckpt/last.ckpt as they were, and says so."""
    import lightning.fabric.plugins.io.torch_io as torch_io

    version = "--trainer.logger.init_args.version=v"
    first = run_cli("fit", version, "--trainer.max_epochs=1")
    assert isinstance(first.trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # installed by the CLI
    ckpts = run_cli.runs / "default" / "v" / "checkpoints"
    before = {name: (ckpts / name).read_bytes() for name in ("best.ckpt", "last.ckpt")}

    def full_disk(checkpoint, path) -> None:
        Path(path).write_bytes(b"half a checkpoint")  # the write got this far
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch_io, "_atomic_save", full_disk)
    full = r"Could not write checkpoint .*(best|last)\.ckpt: the disk is full.*is left intact"
    with pytest.raises(CheckpointWriteError, match=full):
        run_cli("fit", version, "--trainer.max_epochs=2", f"--ckpt_path={ckpts / 'last.ckpt'}")
    for name, data in before.items():
        assert (ckpts / name).read_bytes() == data, f"{name} was changed by the failed run"
    assert not list(ckpts.glob("*.tmp"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: room for one checkpoint of the default config, not two (root and mount(8) needed)."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_ends_train_py_with_one_error_line(tiny_folder: Path, small_disk: Path) -> None:
    """A real full disk under the run directory: the checkpoint that fitted stays intact, no temporary file
    is left, and train.py ends with one `error:` line (path, sizes, what to do) and exit code 1."""
    code, output = run_python(
        "train.py", "fit", f"--config={ROOT / 'configs/cifar10_compact.yaml'}", *folder_args(tiny_folder),
        "--trainer.max_epochs=2", f"--trainer.default_root_dir={small_disk}", *QUIET,
    )  # fmt: skip
    assert code == 1 and "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    ckpts = small_disk / "cifar10_compact" / "version_0" / "checkpoints"
    assert str(ckpts) in errors[0] and "the disk is full (about 1.5 MB needed" in errors[0]
    assert "--trainer.default_root_dir" in errors[0] and "--ckpt_path last" in errors[0]
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt"]  # no .tmp, no interrupted.ckpt
    state = torch.load(ckpts / "best.ckpt", weights_only=True)  # intact: it loads
    assert state["global_step"] == STEPS_PER_EPOCH


def test_last_is_the_newest_state_and_a_resume_keeps_the_earlier_best(run_cli: TinyCli) -> None:
    """last.ckpt follows every epoch even when the monitor does not improve; a resume into a new run
    directory still has to beat the earlier best, and deletes nothing of the earlier run."""
    # monitor the epoch, smaller is better: only epoch 0 is ever "best"
    args = ["--checkpoint.monitor=epoch", "--checkpoint.mode=min"]
    first = run_cli("fit", *args, "--trainer.max_epochs=3").checkpoints
    assert torch.load(first / "best.ckpt", weights_only=True)["global_step"] == STEPS_PER_EPOCH
    assert torch.load(first / "last.ckpt", weights_only=True)["global_step"] == 3 * STEPS_PER_EPOCH
    files = {p.name: p.read_bytes() for p in first.iterdir()}
    assert sorted(files) == ["best.ckpt", "last.ckpt"]  # no last-v1.ckpt, nothing left behind

    resumed = run_cli("fit", *args, "--trainer.max_epochs=5", "--ckpt_path=last")
    second = resumed.checkpoints
    assert second.parent.name == "version_1"
    assert torch.load(second / "last.ckpt", weights_only=True)["global_step"] == 5 * STEPS_PER_EPOCH
    assert not (second / "best.ckpt").exists()  # epochs 3 and 4 did not beat the earlier best (epoch 0)
    assert resumed.trainer.checkpoint_callback.best_model_path == str(first / "best.ckpt")
    assert {p.name: p.read_bytes() for p in first.iterdir()} == files
