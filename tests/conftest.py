from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")  # deprecations inside LightningCLI

sys.path.insert(0, str(Path(__file__).parent))

import torch
from helpers import REAL_CIFAR10, TinyCli, make_imagefolder
from helpers.checkpoints import digest, run_of, train_checkpoint

from lit_vision.data.cifar_classes import CIFAR10_CLASSES, CIFAR100_CLASSES

#: hypothesis (test_transforms.py, test_mixing.py): small images keep 40 examples a test fast, and the same
#: examples every run, so a failure repeats
settings.register_profile("lit_vision", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("lit_vision")

#: process-wide settings a test may change (Lightning's seed_everything exports PL_GLOBAL_SEED, the CLI sets
#: the matmul precision on CUDA): each test starts from the same state, whatever ran before it
#: A single-process DDP fit in this process (configs/trainer/ddp.yaml) exports MASTER_ADDR/MASTER_PORT and
#: leaves a process group: a later multi-process run would inherit the port and its ranks never meet.
_ENV_KEYS = (
    "PL_GLOBAL_SEED", "PL_SEED_WORKERS", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "WANDB_MODE",
    "MASTER_ADDR", "MASTER_PORT",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _process_state() -> Iterator[None]:
    env = {key: os.environ.get(key) for key in _ENV_KEYS}
    for key in _ENV_KEYS:
        os.environ.pop(key, None)
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn_benchmark = torch.backends.cudnn.benchmark  # Trainer(benchmark=...) sets it for the process
    torch.manual_seed(0)  # a test that builds a model without seeding gets the same weights in any order
    yield
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(precision)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def pytest_report_header(config: pytest.Config) -> str:
    found = (REAL_CIFAR10 / "train").is_dir()
    return f"real CIFAR-10: {REAL_CIFAR10} ({'found' if found else 'MISSING'})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (REAL_CIFAR10 / "train").is_dir():
        terminalreporter.write_sep("!", "real CIFAR-10 data missing", yellow=True, bold=True)
        terminalreporter.write_line(
            f"No CIFAR-10 JPEGs under {REAL_CIFAR10}: tests/test_real_data.py and the real-image tests of "
            "tests/test_speedrun.py were skipped, and the export parity tests ran on generated images. "
            "Set LIT_VISION_CIFAR10_DIR to a cifar10 folder (train/<class>/*.jpg) to run them on real data.",
            yellow=True,
        )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own decode cache: no test reads another's (or the user's) cached tensors."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("LIT_VISION_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes, 20 train + 6 test PNG images each, 32x32."""
    return make_imagefolder(tmp_path_factory.mktemp("tiny") / "data", 3, n_train=20, n_test=6)


@pytest.fixture(scope="session")
def tiny_cifar10_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder copy of 'CIFAR-10': its 10 class names, 8 train + 3 test JPEGs each."""
    return make_imagefolder(tmp_path_factory.mktemp("c10") / "data", CIFAR10_CLASSES, 8, 3, ext=".jpg")


@pytest.fixture(scope="session")
def tiny_cifar100_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder copy of 'CIFAR-100': 100 classes, 3 train + 1 test image each."""
    return make_imagefolder(tmp_path_factory.mktemp("c100") / "data", CIFAR100_CLASSES, 3, 1)


@pytest.fixture
def run_cli(tiny_folder: Path, tmp_path: Path) -> TinyCli:
    """``run_cli("fit", *overrides)``: ``lit_vision.cli`` on ``tiny_folder`` (12 images held out, batches of
    8: 6 steps an epoch), quiet, logging under ``tmp_path / "runs"``; returns a ``CliRun`` (the CLI, its run
    directory, checkpoints and metrics.csv rows). ``run_cli.build(...)`` only builds the CLI and
    ``run_cli.argv(...)`` is the command line for ``sys.argv`` or a subprocess (``helpers.cli.TinyCli``)."""
    return TinyCli(tiny_folder, tmp_path / "runs")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``last.ckpt`` of a 3-epoch fit on ``tiny_folder`` (seed 0, Adam at lr 0.01: it learns the task),
    trained once for every test that only reads a checkpoint. Shared: a test that writes beside it copies
    its run first (``helpers.copy_run``); the session fails if a test changed a file of the run."""
    base = tmp_path_factory.mktemp("tiny_checkpoint")
    checkpoint = train_checkpoint(tiny_folder, base / "runs", base / "cache", seed=0)
    before = digest(run_of(checkpoint))
    yield checkpoint
    assert digest(run_of(checkpoint)) == before, "a test changed the shared tiny_checkpoint's run directory"
