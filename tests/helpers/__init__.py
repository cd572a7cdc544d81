"""What several test files share, one module per purpose; the common names are importable from ``helpers``.

* ``paths``: the checkout (``ROOT``), its complete configs (``CONFIGS``), the real CIFAR-10 JPEGs.
* ``cli``: running ``train.py``'s CLI in-process on tiny data (``TinyCli``, behind conftest's ``run_cli``),
  the tiny-data flags (``QUIET``, ``folder_args``, ``folder_run_args``, ``data_args``) and Python in a
  fresh interpreter (``run_python``).
* ``data``: generated datasets on disk (``make_imagefolder``, ``make_torchvision_cifar10``).
* ``checkpoints``: the short fit behind conftest's ``tiny_checkpoint``, and ``copy_run``.
* ``callbacks``: callbacks a test gives the CLI by class path (``helpers.StopAt``, ``helpers.RankRecorder``,
  ...): they stop a run where the test wants, or record what it did.
* ``host_syncs``: ``HostSyncRecorder``, the host reads a training step would make on a GPU.
* ``models``: ``TinyNet``, a user's own backbone. ``trainers``: ``quiet_trainer``.
* ``wandb_records``: reading an offline W&B run file back.
"""

from .callbacks import RankRecorder, ShardItemLog, StopAt, TrainBatchLog, WeightRecorder
from .checkpoints import copy_run, train_checkpoint
from .cli import (
    QUIET,
    CliRun,
    TinyCli,
    data_args,
    env_with_helpers,
    folder_args,
    folder_run_args,
    read_csv,
    run_python,
)
from .data import class_image, make_imagefolder, make_torchvision_cifar10
from .host_syncs import HostSyncRecorder
from .models import TinyNet
from .paths import CONFIGS, REAL_CIFAR10, ROOT
from .trainers import quiet_trainer
from .wandb_records import read_wandb_records

__all__ = [
    "CONFIGS",
    "QUIET",
    "REAL_CIFAR10",
    "ROOT",
    "CliRun",
    "HostSyncRecorder",
    "RankRecorder",
    "ShardItemLog",
    "StopAt",
    "TinyCli",
    "TinyNet",
    "TrainBatchLog",
    "WeightRecorder",
    "class_image",
    "copy_run",
    "data_args",
    "env_with_helpers",
    "folder_args",
    "folder_run_args",
    "make_imagefolder",
    "make_torchvision_cifar10",
    "quiet_trainer",
    "read_csv",
    "read_wandb_records",
    "run_python",
    "train_checkpoint",
]
