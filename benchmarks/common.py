"""Set-up shared by the benchmark scripts: the data (real CIFAR-10 JPEGs or generated images) and a timer.

Scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path`` and they import it as
``common``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch

from lit_vision.data import ImageDataModule
from lit_vision.data.synthetic import make_imagefolder

__all__ = ["DEFAULT_DATA", "StepTimer", "add_data_arguments", "load_data"]

#: the real CIFAR-10 training JPEGs beside the checkout (``../shared/data/cifar10``)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/cifar10"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``, ``--synthetic``, ``--backbone``, ``--batch-size`` and ``--log-dir``."""
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--synthetic", action="store_true", help="generated images instead of a dataset")
    parser.add_argument("--backbone", default="compact_cifar")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--log-dir", default="/tmp/lit_vision_bench")


def load_data(args: argparse.Namespace) -> ImageDataModule:
    """The set-up datamodule (1,000 images held out, channels-last), seeded; prints what is measured."""
    L.seed_everything(0, verbose=False)
    data_dir = args.data_dir
    if args.synthetic:
        data_dir = make_imagefolder(Path(args.log_dir) / "synthetic", 10, n_train=600, n_test=None)
    dm = ImageDataModule(
        "imagefolder", data_dir, batch_size=args.batch_size, val_size=1000, channels_last=True
    )
    dm.setup("fit")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {data_dir}, {args.backbone}, "
        f"batch {args.batch_size}"
    )
    return dm


class StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch (epoch-end work such as
    checkpoint writes is not counted: the plain loops have none)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and not self.start:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()
