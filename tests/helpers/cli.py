"""Running ``train.py``'s CLI the way the tests do: in-process on tiny generated data (conftest's ``run_cli``
fixture is a ``TinyCli``), its flags for ``sys.argv`` or a subprocess, and Python in a fresh interpreter."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from lit_vision.cli import LitVisionCLI, main

from .paths import ROOT

#: CLI flags that keep test output short
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def folder_args(data: Path, val_size: int = 12) -> list[str]:
    """The data flags of a run on a generated ImageFolder tree (``tiny_folder``: 12 of 60 images held out,
    6 batches of 8 to an epoch)."""
    return [
        "--data.dataset=imagefolder",
        f"--data.data_dir={data}",
        f"--data.val_size={val_size}",
        "--data.batch_size=8",
    ]


def folder_run_args(data: Path, runs: Path, val_size: int = 12) -> list[str]:
    """CLI flags for a quiet run on a generated ImageFolder tree, logging under ``runs``."""
    return [*folder_args(data, val_size), f"--trainer.logger.init_args.save_dir={runs}", *QUIET]


def data_args(config: str, request: pytest.FixtureRequest) -> list[str]:
    """Point a config (relative to the checkout) at the matching tiny dataset fixture."""
    import yaml

    dataset = yaml.safe_load((ROOT / config).read_text()).get("data", {}).get("dataset", "cifar10")
    fixture, val_size = {
        "cifar10": ("tiny_cifar10_folder", 20),
        "cifar100": ("tiny_cifar100_folder", 100),
        "imagefolder": ("tiny_folder", 12),
    }[dataset]
    root = request.getfixturevalue(fixture)
    return [f"--data.data_dir={root}", f"--data.val_size={val_size}", "--data.batch_size=8"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class CliRun:
    """What a CLI run left: the ``LitVisionCLI`` (its trainer, model, datamodule, config) and its files."""

    def __init__(self, cli: LitVisionCLI) -> None:
        self.cli = cli
        self.trainer, self.model, self.datamodule = cli.trainer, cli.model, cli.datamodule
        self.config = cli.config

    @property
    def run_dir(self) -> Path:
        """The run directory (``<save_dir>/<name>/version_<N>``): metrics.csv, config.yaml, checkpoints/."""
        return Path(self.trainer.log_dir)

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def metrics(self) -> list[dict[str, str]]:
        """The rows of the run's metrics.csv (the CSV logger's), as written."""
        return read_csv(self.run_dir / "metrics.csv")


class TinyCli:
    """``lit_vision.cli`` on a generated ImageFolder tree (``folder_run_args``), logging under ``runs``.

    Call it with the subcommand and the flags that matter to the test: ``run_cli("fit",
    "--trainer.max_epochs=1")``. ``configs`` (paths relative to the checkout, or absolute) come first on the
    command line, so the tiny-data flags override their data settings and ``overrides`` override both, as a
    user composes them; ``data`` replaces the tree.
    """

    def __init__(self, data: Path, runs: Path) -> None:
        self.data, self.runs = data, runs

    def argv(
        self,
        subcommand: str | None,
        *overrides: str,
        data: Path | None = None,
        configs: Iterable[str | Path] = (),
    ) -> list[str]:
        """The command line after ``train.py`` (for ``sys.argv`` or a subprocess)."""
        return [
            *([subcommand] if subcommand else []),
            *(f"--config={ROOT / config}" for config in configs),
            *folder_run_args(data or self.data, self.runs),
            *overrides,
        ]

    def __call__(
        self, subcommand: str, *overrides: str, data: Path | None = None, configs: Iterable[str | Path] = ()
    ) -> CliRun:
        """Run ``subcommand`` (fit, validate, test, predict) to its end."""
        return CliRun(main(self.argv(subcommand, *overrides, data=data, configs=configs)))

    def build(self, *overrides: str, data: Path | None = None, configs: Iterable[str | Path] = ()) -> CliRun:
        """Parse and instantiate only (``run=False``): the trainer, model and datamodule, nothing run."""
        return CliRun(main(self.argv(None, *overrides, data=data, configs=configs), run=False))


def env_with_helpers() -> dict[str, str]:
    """This process's environment with ``tests/`` on ``PYTHONPATH``, so that a child process can import
    ``helpers`` (the callbacks given by class path)."""
    path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def run_python(
    *args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
) -> tuple[int, str]:
    """``python ARGS`` in a fresh interpreter, as a user runs a script (``train.py``, ``examples/...``,
    ``-c code``): its exit code and its stdout + stderr."""
    done = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, done.stdout + done.stderr
