"""Run a campaign: every (cell, seed) is a ``train.py fit`` subprocess with its own run directory.

* Cells run one after another on CPU (two torch processes on the same cores slow each other down, and
  their timings would mean nothing), and one per GPU at a time when ``devices`` names several GPUs.
* A campaign started again skips every (cell, seed) that has a row in ``results.csv`` and resumes an
  interrupted one from its newest checkpoint (``--ckpt_path last``). A time-budgeted cell keeps the schedule
  it was planned with (``plan.json`` in its run directory), so its resumed run continues the same schedule.
* After every cell: its row and curve are written, ``summary.md`` and the plots are regenerated, and a
  progress line gives done/total, elapsed time and an ETA.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from lit_vision.compare.campaign import Campaign, Cell
from lit_vision.compare.results import (
    append_row,
    cell_metrics,
    device_name,
    read_rows,
    software_versions,
    write_curve,
)

__all__ = ["Job", "cell_command", "format_seconds", "run_campaign"]

POLL_S = 2.0  # how often running cells are checked (and the load average sampled)


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _flag(key: str, value: Any) -> str:
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    elif isinstance(value, bool):
        value = str(value).lower()
    elif value is None:
        value = "null"
    return f"--{key}={value}"


def _max_time(minutes: float) -> str:
    """Minutes -> Lightning's ``DD:HH:MM:SS``."""
    seconds = max(1, round(minutes * 60))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{mins:02d}:{secs:02d}"


def cell_command(campaign: Campaign, cell: Cell, seed: int, run_root: Path) -> list[str]:
    """The ``train.py fit`` arguments of one (cell, seed), without the budget's planned schedule."""
    args: list[str] = []
    # base, then the campaign's `set` (it amends the base), then the cell's own fragments and overrides: a
    # technique that sets a key the base pins (label smoothing over `model.label_smoothing: 0`) must win
    for config in campaign.base:
        args += ["--config", config]
    args += [_flag(key, value) for key, value in campaign.overrides.items()]
    for config in cell.configs:
        args += ["--config", config]
    args += [_flag(key, value) for key, value in cell.overrides]
    if campaign.max_epochs is not None:
        args.append(_flag("trainer.max_epochs", campaign.max_epochs))
    if campaign.max_time is not None:
        args.append(_flag("trainer.max_time", _max_time(campaign.max_time)))
    args += [
        _flag("seed_everything", seed),
        # every cell logs to CSV in its own folder: results are read from metrics.csv
        "--trainer.logger.class_path=lightning.pytorch.loggers.CSVLogger",
        _flag("trainer.logger.init_args.save_dir", run_root.parent.as_posix()),
        _flag("trainer.logger.init_args.name", run_root.name),
        "--trainer.enable_progress_bar=false",
    ]
    return args


@dataclass
class Job:
    """One (cell, seed) of the campaign and, while it runs, its process."""

    cell: Cell
    seed: int
    run_root: Path
    index: int = 0
    process: subprocess.Popen | None = None
    gpu: int | None = None
    started: float = 0.0
    loads: list[float] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.cell.id, str(self.seed)

    @property
    def name(self) -> str:
        return f"{self.cell.id} seed {self.seed}"


def _state(run_root: Path) -> dict[str, Any]:
    path = run_root / "cell.json"
    return json.loads(path.read_text()) if path.is_file() else {"attempts": []}


def _save_state(run_root: Path, state: dict[str, Any]) -> None:
    run_root.mkdir(parents=True, exist_ok=True)
    tmp = run_root / "cell.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(run_root / "cell.json")


def _env(gpu: int | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def _gpu_flags(gpu: int | None) -> list[str]:
    return [] if gpu is None else ["--trainer.accelerator=gpu", "--trainer.devices=1"]


def _plan(campaign: Campaign, job: Job, args: list[str], log: Callable[[str], None]) -> list[str]:
    """Time-budgeted cells: the planned epochs / batches per epoch (made once, kept for resumes)."""
    if campaign.max_time is None or campaign.max_epochs is not None:
        return []
    plan_file = job.run_root / "plan.json"
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text())
    else:
        log(f"  planning {job.name}: timing training steps for a {campaign.max_time:g}-minute budget")
        command = [sys.executable, "-m", "lit_vision.compare.budget", str(campaign.max_time), "--"]
        done = subprocess.run(
            command + args + _gpu_flags(job.gpu),
            capture_output=True,
            text=True,
            env=_env(job.gpu),
        )
        if done.returncode != 0:
            raise RuntimeError(f"Planning {job.name} failed:\n{done.stderr[-3000:]}")
        plan = json.loads(done.stdout.strip().splitlines()[-1])
        job.run_root.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(plan, indent=1))
    flags = [_flag("trainer.max_epochs", plan["max_epochs"])]
    if plan.get("limit_train_batches"):
        flags.append(_flag("trainer.limit_train_batches", plan["limit_train_batches"]))
    return flags


def _start(campaign: Campaign, job: Job, log: Callable[[str], None]) -> None:
    args = cell_command(campaign, job.cell, job.seed, job.run_root)
    args += _plan(campaign, job, args, log)
    command = [sys.executable, "-m", "lit_vision.cli", "fit", *args, *_gpu_flags(job.gpu), "--ckpt_path=last"]
    job.run_root.mkdir(parents=True, exist_ok=True)
    state = _state(job.run_root)
    state["command"] = command[1:]
    _close_lost_attempts(job.run_root, state)
    job.started = time.time()
    # recorded now, so an attempt whose runner dies with it (machine stop, session end) still counts
    state["attempts"].append({"started": job.started, "wall_s": None, "exit": None})
    _save_state(job.run_root, state)
    log_file = open(job.run_root / "cell.log", "a")  # noqa: SIM115 - closed when the process ends
    log_file.write(f"\n$ {' '.join(command)}\n")
    log_file.flush()
    job.loads = []
    job.process = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, env=_env(job.gpu), start_new_session=True
    )
    job.process.log_file = log_file  # type: ignore[attr-defined]


def _close_lost_attempts(run_root: Path, state: dict[str, Any]) -> None:
    """Attempts that never got an exit status (the runner died with them): their wall time is taken as the
    time from their start to the last file their run wrote, a lower bound."""
    for attempt in state["attempts"]:
        if attempt.get("exit") is None and attempt.get("started") is not None:
            written = [
                p.stat().st_mtime for p in run_root.rglob("*") if p.is_file() and p.name != "cell.json"
            ]
            last = max((t for t in written if t >= attempt["started"]), default=attempt["started"])
            attempt.update(wall_s=last - attempt["started"], exit="lost")


def _has_test_split(config: dict[str, Any]) -> bool:
    from lit_vision.data import ImageDataModule

    data = config.get("data") or {}
    try:
        return ImageDataModule(**data).has_test_split
    except (TypeError, ValueError):
        return False


def _size(run_dir: Path) -> tuple[int | None, int | None]:
    """Parameters and MACs per image of the checkpoint's backbone (registered backbones only)."""
    import torch

    from lit_vision.models import create_backbone
    from lit_vision.models.inspection.profiling import count_macs, count_params

    checkpoint = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters", {})
    if not isinstance(hparams.get("backbone"), str):
        return None, None
    model = create_backbone(
        hparams["backbone"], hparams["num_classes"], **(hparams.get("backbone_kwargs") or {})
    )
    size = int(checkpoint.get("lit_vision", {}).get("input_size", 32))
    return count_params(model), count_macs(model, size)


def _evaluation(config: dict[str, Any]) -> str | None:
    """What ``train.py test`` measures for a cell: ``"test"`` (the dataset's test split), ``"val_tta"``
    (no test split, but the config has a TTA callback: the held-out validation split, which ``test`` falls
    back to, scored with the TTA views, beside ``val/acc`` without them) or ``None`` (nothing to add)."""
    if _has_test_split(config):
        return "test"
    if config.get("tta") and (config.get("data") or {}).get("val_size", 1) != 0:
        return "val_tta"
    return None


def _test(job: Job, run_dir: Path, log: Callable[[str], None]) -> str | None:
    """``train.py test`` with the best checkpoint when :func:`_evaluation` finds something to measure;
    returns what it measured."""
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    kind = _evaluation(config)
    if kind is None:
        return None
    command = [sys.executable, "-m", "lit_vision.cli", "test", "--config", config_file.as_posix(),
               f"--ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", *_gpu_flags(job.gpu)]  # fmt: skip
    with open(job.run_root / "cell.log", "a") as log_file:
        done = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, env=_env(job.gpu))
    if done.returncode != 0:
        log(f"  test of {job.name} failed (exit {done.returncode}); see {job.run_root / 'cell.log'}")
    return kind


def _was_stopped(run_root: Path) -> bool:
    """A fit that finishes removes its ``interrupted.ckpt``: one in the newest run directory means this
    attempt was stopped (older attempts' files stay where they are)."""
    versions = [p for p in run_root.glob("version_*") if p.name.removeprefix("version_").isdigit()]
    newest = max(versions, key=lambda p: int(p.name.removeprefix("version_")), default=None)
    return newest is not None and (newest / "checkpoints" / "interrupted.ckpt").is_file()


def _fit_run_dir(run_root: Path) -> Path | None:
    """The newest version directory that holds a best checkpoint."""
    candidates = [p.parent.parent for p in run_root.glob("version_*/checkpoints/best.ckpt")]
    return max(candidates, key=lambda p: (p / "checkpoints" / "best.ckpt").stat().st_mtime, default=None)


def _collect(campaign: Campaign, job: Job, out: Path) -> dict[str, Any]:
    run_dir = _fit_run_dir(job.run_root)
    if run_dir is None:
        raise RuntimeError(f"{job.name} finished without a best checkpoint under {job.run_root}.")
    evaluated = _test(job, run_dir, print)
    metrics = cell_metrics(job.run_root)
    if evaluated == "val_tta":  # test/acc was measured on the validation split: name it for what it is
        metrics["val_acc_tta"], metrics["test_acc"] = metrics["test_acc"], None
    if metrics["val_acc_final"] is None:
        raise RuntimeError(f"{job.name}: no val/acc in {job.run_root}/version_*/metrics.csv.")
    state = _state(job.run_root)
    params, macs = _size(run_dir)
    loads = [a["load_avg"] for a in state["attempts"] if a.get("load_avg") is not None]
    write_curve(out / "curves" / f"{job.cell.id}-s{job.seed}.csv", metrics["curve"])
    return {
        **{k: v for k, v in metrics.items() if k != "curve"},
        "group": job.cell.group,
        "cell": job.cell.id,
        "seed": job.seed,
        "params": params,
        "macs": macs,
        "wall_s": sum(a["wall_s"] or 0.0 for a in state["attempts"]),
        "peak_rss_mb": max((a.get("peak_rss_mb") or 0 for a in state["attempts"]), default=None),
        "load_avg": sum(loads) / len(loads) if loads else None,
        "cpu_count": os.cpu_count(),
        "device": device_name(job.gpu),
        "versions": software_versions(),
        "configs": " ".join((*campaign.base, *job.cell.configs)),
        "overrides": " ".join(_flag(k, v) for k, v in (*campaign.overrides.items(), *job.cell.overrides)),
        "run_dir": run_dir.as_posix(),
    }


def _record_campaign(campaign: Campaign, out: Path, command: str | None, log: Callable[[str], None]) -> None:
    """Write ``campaign.yaml`` (warning when it changed since runs finished: those are kept) and, when given,
    ``command.txt``, how the campaign was started."""
    spec = campaign.to_dict()
    if (out / "campaign.yaml").is_file():
        before = yaml.safe_load((out / "campaign.yaml").read_text()) or {}
        changed = sorted(k for k in set(before) | set(spec) if k != "seeds" and before.get(k) != spec.get(k))
        if changed and read_rows(out / "results.csv"):
            log(f"warning: {campaign.name}'s {', '.join(changed)} changed since its finished runs; they are "
                "kept as they are (use another --name, or delete their rows, to run them again)")  # fmt: skip
    (out / "campaign.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    if command:
        (out / "command.txt").write_text(command + "\n")


def _jobs(campaign: Campaign, runs_root: Path) -> list[Job]:
    """Every (cell, seed) of the campaign, numbered from 1, seed-major: a stopped campaign has every cell at
    the same seed count."""
    cells = campaign.cells()
    jobs = [
        Job(cell, seed, runs_root / campaign.name / f"{cell.id}-s{seed}")
        for seed in campaign.seeds
        for cell in cells
    ]
    for i, job in enumerate(jobs, 1):
        job.index = i
    return jobs


def _reap(job: Job) -> bool:
    """Whether ``job``'s process has ended; if so, its log is closed and its attempt recorded (wall time,
    exit status, peak memory, mean load average)."""
    assert job.process is not None
    pid, status, rusage = os.wait4(job.process.pid, os.WNOHANG)
    if pid == 0:
        return False
    job.process.returncode = os.waitstatus_to_exitcode(status)
    job.process.log_file.close()  # type: ignore[attr-defined]
    state = _state(job.run_root)
    state["attempts"][-1].update({
        "wall_s": time.time() - job.started,
        "exit": job.process.returncode,
        "peak_rss_mb": rusage.ru_maxrss / 1024,  # Linux: KiB
        "load_avg": sum(job.loads) / len(job.loads) if job.loads else None,
    })  # fmt: skip
    _save_state(job.run_root, state)
    return True


def _stop_children(running: list[Job], signum: int) -> NoReturn:
    """SIGTERM/SIGINT of the runner: stop the running cells and record their attempts, then exit."""
    for job in running:  # each writes interrupted.ckpt and exits; the next start resumes it
        if job.process is not None and job.process.poll() is None:
            job.process.send_signal(signal.SIGTERM)
    for job in running:
        if job.process is not None:
            job.process.wait()
            state = _state(job.run_root)  # the stopped attempt's time counts in the row's wall time
            state["attempts"][-1].update(wall_s=time.time() - job.started, exit=job.process.returncode)
            _save_state(job.run_root, state)
    raise SystemExit(128 + signum)


def _record_result(
    campaign: Campaign, job: Job, out: Path, log: Callable[[str], None]
) -> dict[str, Any] | None:
    """A finished job's row, appended to ``results.csv`` (the summary regenerated); ``None`` when the run
    failed or was stopped (logged)."""
    from lit_vision.compare.summary import write_campaign_summary

    assert job.process is not None
    if job.process.returncode != 0 or _was_stopped(job.run_root):
        log(f"  {job.name} FAILED (exit {job.process.returncode}); see {job.run_root / 'cell.log'}")
        return None
    row = _collect(campaign, job, out)
    append_row(out / "results.csv", row)
    write_campaign_summary(out, campaign)
    return row


@dataclass
class _Progress:
    """Runs done and failed, for the progress lines and their ETA."""

    total: int
    finished: int
    slots: int
    start: float = field(default_factory=time.time)
    durations: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def starting(self, job: Job, running: int) -> str:
        """The line that says ``job`` starts, beside ``running`` others."""
        where = "CPU" if job.gpu is None else f"GPU {job.gpu}"
        return f"[{self.finished + running + 1}/{self.total}] {job.name}: starting on {where}"

    def done(self, job: Job, row: dict[str, Any]) -> str:
        """Count ``job`` as finished with ``row``; returns its progress line."""
        self.finished += 1
        self.durations.append(row["wall_s"])
        left = self.total - self.finished - len(self.failures)
        eta = sum(self.durations) / len(self.durations) * left / self.slots
        return (
            f"[{self.finished}/{self.total}] {job.name}: val/acc {row['val_acc_final']:.2%} in "
            f"{format_seconds(row['wall_s'])} | elapsed {format_seconds(time.time() - self.start)}, "
            f"ETA {format_seconds(eta)}"
        )


def run_campaign(
    campaign: Campaign,
    results_root: Path = Path("results"),
    runs_root: Path = Path("runs/campaigns"),
    gpus: list[int] | None = None,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run every (cell, seed) that has no row yet; returns ``results/<campaign>``.

    ``gpus``: GPU indices to run on, one cell per GPU at a time; ``None`` or empty: one cell at a time on
    the CPU. ``command``: how the campaign was started, recorded for docs/results.md.
    """
    from lit_vision.compare.summary import write_campaign_summary

    out = results_root / campaign.name
    out.mkdir(parents=True, exist_ok=True)
    _record_campaign(campaign, out, command, log)
    results_file = out / "results.csv"
    done = {(r["cell"], r["seed"]) for r in read_rows(results_file)}
    jobs = _jobs(campaign, runs_root)
    todo = [job for job in jobs if job.key not in done]
    slots: list[int | None] = list(gpus) if gpus else [None]
    progress = _Progress(total=len(jobs), finished=len(jobs) - len(todo), slots=len(slots))
    if progress.finished:
        log(f"{campaign.name}: {progress.finished} of {progress.total} runs already in {results_file}; "
            f"{len(todo)} to go")  # fmt: skip
    running: list[Job] = []
    previous = {
        s: signal.signal(s, lambda signum, _frame: _stop_children(running, signum))
        for s in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        while todo or running:
            while todo and len(running) < len(slots):
                job = todo.pop(0)
                busy = {j.gpu for j in running}
                job.gpu = next(s for s in slots if s not in busy)
                log(progress.starting(job, len(running)))
                _start(campaign, job, log)
                running.append(job)
            time.sleep(POLL_S)
            for job in list(running):
                job.loads.append(os.getloadavg()[0])
                if not _reap(job):
                    continue
                running.remove(job)
                row = _record_result(campaign, job, out, log)
                if row is None:
                    progress.failures.append(job.name)
                else:
                    log(progress.done(job, row))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if progress.failures:
        raise RuntimeError(
            f"{len(progress.failures)} run(s) failed: {', '.join(progress.failures)}. Fix the cause and "
            "start the campaign again: finished runs are skipped, failed ones resume from their last "
            "checkpoint."
        )
    write_campaign_summary(out, campaign)  # also when nothing ran: a changed baseline or column shows at once
    log(f"{campaign.name}: all {progress.total} runs done; see {out / 'summary.md'}")
    return out
