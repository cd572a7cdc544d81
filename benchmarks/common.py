"""Set-up shared by the benchmark scripts: the data (real CIFAR-10 JPEGs or generated images), the device
(``--device cpu|cuda``), a timer that synchronizes with it, the Trainer a timed Lightning run uses and the
batches of the hand-written loops Lightning is compared with.

Scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path`` and they import it as
``common``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lit_vision.data import ImageDataModule
from lit_vision.data.synthetic import make_imagefolder

__all__ = [
    "DEFAULT_DATA",
    "PlainLoop",
    "StepTimer",
    "add_data_arguments",
    "add_device_argument",
    "describe_device",
    "load_data",
    "synchronize",
    "timed_trainer",
]

#: the real CIFAR-10 training JPEGs beside the checkout (``../shared/data/cifar10``)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/cifar10"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``, ``--synthetic``, ``--backbone``, ``--batch-size``, ``--log-dir`` and ``--device``."""
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--synthetic", action="store_true", help="generated images instead of a dataset")
    parser.add_argument("--backbone", default="compact_cifar")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--log-dir", default="/tmp/lit_vision_bench")
    add_device_argument(parser)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda``: where the benchmark runs (a Lightning accelerator name as well)."""
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default: cpu)"
    )


def describe_device(device: str) -> str:
    """The device in words for the printed header; exits with a message when CUDA is asked for and absent."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                "--device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False)"
            )
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def synchronize(device: str) -> None:
    """Wait for the device's queued work: GPU kernels run asynchronously, so a host clock read without this
    measures only how fast work was queued."""
    if device == "cuda":
        torch.cuda.synchronize()


def load_data(args: argparse.Namespace) -> ImageDataModule:
    """The set-up datamodule (1,000 images held out, channels-last, resident on a GPU), seeded; prints what
    is measured."""
    L.seed_everything(0, verbose=False)
    data_dir = args.data_dir
    if args.synthetic:
        data_dir = make_imagefolder(Path(args.log_dir) / "synthetic", 10, n_train=600, n_test=None)
    dm = ImageDataModule(
        "imagefolder",
        data_dir,
        batch_size=args.batch_size,
        val_size=1000,
        channels_last=True,
        # on a GPU the images live there (the plain loops keep them there too): no per-step copies timed
        device_resident=args.device == "cuda",
    )
    dm.setup("fit")
    print(f"{describe_device(args.device)}, data {data_dir}, {args.backbone}, batch {args.batch_size}")
    return dm


class StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch (epoch-end work such as
    checkpoint writes is not counted: the plain loops have none). On ``cuda`` it synchronizes at those two
    points only, so the steps in between overlap with the GPU as they do in a real run."""

    def __init__(self, warmup: int, device: str = "cpu") -> None:
        self.warmup, self.device, self.start, self.end = warmup, device, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and not self.start:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= trainer.max_steps > 0:  # the last step: wait for its kernels
            synchronize(self.device)
        self.end = time.perf_counter()


def timed_trainer(args: argparse.Namespace, callbacks: list[L.Callback], logger: Any = False) -> L.Trainer:
    """A Trainer for ``args.steps`` training steps on ``args.device`` and nothing else (no validation,
    checkpoints, progress bar or model summary), with ``callbacks`` (a :class:`StepTimer` among them)."""
    return L.Trainer(
        max_steps=args.steps,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=logger,
        callbacks=callbacks,
        accelerator=args.device,
        devices=1,
    )


class PlainLoop:
    """The batches of a hand-written training loop over one split held on the device, and its clock.

    Iterating yields ``(step, epoch, indices)`` for ``steps`` batches of ``batch_size`` indices (0-based
    steps; a fresh random order every epoch, its last partial batch dropped, as Lightning's side does); the
    clock starts at step ``warmup``, after a device synchronization. :meth:`images_per_second` ends it.
    """

    def __init__(self, dm: Any, args: argparse.Namespace) -> None:
        train = dm.split("train")
        # on the device once, as ``load_data`` keeps them for Lightning's side (``data.device_resident``)
        self.images, self.targets = train.images.to(args.device), train.targets.to(args.device)
        self.indices = train.indices.to(args.device)
        self.batch_size, self.device = args.batch_size, args.device
        self.steps, self.warmup = args.steps, args.warmup
        self.start = 0.0

    def __iter__(self) -> Iterator[tuple[int, int, Tensor]]:
        step, epoch = 0, 0
        while step < self.steps:
            perm = self.indices[torch.randperm(len(self.indices), device=self.device)]
            for i in range(len(perm) // self.batch_size):
                if step == self.warmup:
                    synchronize(self.device)
                    self.start = time.perf_counter()
                yield step, epoch, perm[i * self.batch_size : (i + 1) * self.batch_size]
                step += 1
                if step == self.steps:
                    return
            epoch += 1

    def images_per_second(self) -> float:
        """Images per second of the timed steps, once the device has finished them."""
        synchronize(self.device)
        return (self.steps - self.warmup) * self.batch_size / (time.perf_counter() - self.start)


def prepared_for_fit(cli: Any, device: str = "cpu") -> tuple[Any, Any]:
    """The model and datamodule a CLI built (``run=False``), set up as ``fit`` does before its first step,
    for a hand-written loop: data loaded, normalization copied, data-dependent init (airbench's whitening),
    moved to ``device``, ``configure_model`` run, training mode."""
    model, dm = cli.model, cli.datamodule
    dm.prepare_data()
    dm.setup("fit")
    model.input_mean.copy_(torch.as_tensor(dm.mean))
    model.input_std.copy_(torch.as_tensor(dm.std))
    if hasattr(model.backbone, "init_from_data"):
        model.init_backbone_from_data(dm)
    model.to(device)
    model.configure_model()
    model.train()
    return model, dm
