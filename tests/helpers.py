"""Tiny generated datasets and models for the tests (the ImageFolder generator is lit_vision's own)."""

from __future__ import annotations

import json
import os
import pickle
import traceback
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from lit_vision.data.cifar_classes import CIFAR10_CLASSES
from lit_vision.data.synthetic import class_image, make_imagefolder

__all__ = [
    "CONFIGS",
    "QUIET",
    "REAL_CIFAR10",
    "class_image",
    "data_args",
    "folder_run_args",
    "make_imagefolder",
    "make_torchvision_cifar10",
]

#: the real CIFAR-10 JPEGs (``train/<class>/*.jpg``): ``../shared`` beside the checkout, or
#: ``$LIT_VISION_CIFAR10_DIR``; the tests that use them say so loudly when they are missing (conftest.py)
REAL_CIFAR10 = Path(
    os.environ.get("LIT_VISION_CIFAR10_DIR", Path(__file__).resolve().parents[2] / "shared/data/cifar10")
)

ROOT = Path(__file__).resolve().parents[1]
#: the complete configs (a run each): the top level and the speedrun recipes, relative to the checkout
CONFIGS = sorted(
    p.relative_to(ROOT).as_posix()
    for pattern in ("*.yaml", "speedrun/*.yaml")
    for p in (ROOT / "configs").glob(pattern)
)

#: CLI flags that keep test output short
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def data_args(config: str, request) -> list[str]:
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


def folder_run_args(data: Path, runs: Path, val_size: int = 12) -> list[str]:
    """CLI flags for a run on a generated ImageFolder tree, logging under ``runs``."""
    return [
        "--data.dataset=imagefolder",
        f"--data.data_dir={data}",
        f"--data.val_size={val_size}",
        "--data.batch_size=8",
        f"--trainer.logger.init_args.save_dir={runs}",
        *QUIET,
    ]


def make_torchvision_cifar10(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Write files in torchvision's ``cifar-10-batches-py`` format (random pixels, labels cycling 0..9)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n: int, offset: int) -> dict:
        labels = [(offset + i) % 10 for i in range(n)]
        data = np.stack([class_image(lab, rng).transpose(2, 0, 1).reshape(-1) for lab in labels])
        return {"data": data, "labels": labels}

    per = n_train // 5
    for i in range(5):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(batch(per, i * per), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test, 0), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES}, f)
    return root


class TinyNet(nn.Module):
    """A user's own model, given to the CLI by class_path."""

    def __init__(self, num_classes: int = 10, hidden: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, hidden, 3, padding=1)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def read_wandb_records(path: Path) -> list:
    """Decode the protobuf records of an offline W&B run file (``run-<id>.wandb``).

    The file is a 7-byte header (``:W&B``, magic, version) followed by LevelDB-log style 32 KiB blocks of
    chunks: CRC32 (4 bytes), length (2), type (1: full, 2: first, 3: middle, 4: last), payload.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    payloads, partial = [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer: too small for a chunk header
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind in (2, 3):
            partial = (partial if kind == 3 else b"") + chunk
        elif kind == 4:
            payloads.append(partial + chunk)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


class RankRecorder(L.Callback):
    """Writes what this process saw to ``<out_dir>/rank<R>-<stage>.json`` (tests of DDP runs).

    Records the epoch-level ``callback_metrics`` (step values are each rank's own and are left out) and
    the number of samples this rank processed in each loop, so a test can check the sharding.
    """

    def __init__(self, out_dir: str, weights: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.weights = weights  # also rank<R>-weights-{start,end}.pt: the backbone's parameters
        self.seen: dict[str, int] = {"train": 0, "val": 0, "test": 0}

    def _save_weights(self, trainer, pl_module, when: str) -> None:
        if self.weights:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            params = {n: p.detach().clone() for n, p in pl_module.backbone.named_parameters()}
            torch.save(params, self.out_dir / f"rank{trainer.global_rank}-weights-{when}.pt")

    def on_train_start(self, trainer, pl_module) -> None:
        self._save_weights(trainer, pl_module, "start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen["train"] += len(batch[1])

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not trainer.sanity_checking:
            self.seen["val"] += len(batch[1])

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.seen["test"] += len(batch[1])

    def _dump(self, trainer: L.Trainer, stage: str) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if not k.endswith("_step")}
        record = {"world_size": trainer.world_size, "metrics": metrics, "seen": self.seen}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}-{stage}.json").write_text(json.dumps(record))

    def on_fit_end(self, trainer, pl_module) -> None:
        self._dump(trainer, "fit")
        self._save_weights(trainer, pl_module, "end")

    def on_test_end(self, trainer, pl_module) -> None:
        self._dump(trainer, "test")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":  # the validate subcommand (fit's validations are in "fit")
            self._dump(trainer, "validate")


class StopAt(L.Callback):
    """Stops ``fit`` after global step ``step``: ``sigterm`` (the process signals itself, as a scheduler or
    ``kill`` would), ``sigterm_raised`` (the SIGTERMException that Lightning raises on every rank once a DDP
    run agreed to stop: a signal inside a gloo collective makes Lightning's own handler race, so DDP tests
    start from its outcome), ``keyboard`` (Ctrl+C), ``error`` (a RuntimeError, as a bug or a bad batch would
    raise), or ``clean`` (``trainer.should_stop`` at the epoch's end). ``rank``: only in that process."""

    def __init__(self, step: int, how: str = "sigterm", rank: int | None = None) -> None:
        self.step, self.how, self.rank = step, how, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step or self.rank not in (None, trainer.global_rank):
            return
        if self.how == "sigterm":
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler raises at the next batch
        elif self.how == "sigterm_raised":
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            raise SIGTERMException
        elif self.how == "keyboard":
            raise KeyboardInterrupt
        elif self.how == "error":
            raise RuntimeError(f"StopAt: error on rank {trainer.global_rank} at step {self.step}")
        else:
            trainer.should_stop = True


class TrainBatchLog(L.Callback):
    """The sample indices (into the decoded split) of every batch ``fit`` trains on, in order.

    ``install`` wraps ``TensorImageDataset.__getitems__`` to log what each dataset hands out; the log is
    cut to the batches actually trained (Lightning fetches one batch ahead). ``TrainBatchLog.latest`` is
    the instance of the latest run, also one that stopped with an exception.
    """

    latest: TrainBatchLog | None = None

    def __init__(self) -> None:
        self.fetched: list[tuple[object, list[int]]] = []
        self.trained = 0
        self.dataset: object | None = None
        TrainBatchLog.latest = self

    @staticmethod
    def install(monkeypatch) -> None:
        from lit_vision.data.datasets import TensorImageDataset

        original = TensorImageDataset.__getitems__

        def logged(dataset, batch):
            out = original(dataset, batch)
            if TrainBatchLog.latest is not None:
                TrainBatchLog.latest.fetched.append(
                    (dataset, dataset.indices[torch.as_tensor(batch)].tolist())
                )
            return out

        monkeypatch.setattr(TensorImageDataset, "__getitems__", logged)

    def on_train_start(self, trainer, pl_module) -> None:
        self.dataset = trainer.train_dataloader.dataset

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.trained += 1

    @property
    def batches(self) -> list[list[int]]:
        return [idx for dataset, idx in self.fetched if dataset is self.dataset][: self.trained]


class WeightRecorder(L.Callback):
    """Every floating-point parameter and buffer of the model after each optimizer step, by name (the raw
    weights: EMA never changes them). ``WeightRecorder.latest`` is the instance of the latest run."""

    latest: WeightRecorder | None = None

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        WeightRecorder.latest = self

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        named = [*pl_module.named_parameters(), *pl_module.named_buffers()]
        self.states.append({k: t.detach().clone() for k, t in named if t.is_floating_point()})


class HostSyncRecorder(L.Callback):
    """Records every operation that would make the host wait for a CUDA device, over training steps
    [start, start + steps): from the first callback's ``on_train_batch_start`` of step ``start`` to that
    of step ``start + steps``, so the loader, the batch transfer hooks, ``training_step``, backward, the
    optimizer step, every callback's batch hooks and Lightning's logging in between are all covered.

    On the CPU nothing waits, so the sync points are recognised by what they are: reading a tensor's value on
    the host (``item``, ``__bool__``, ``__int__``/``__float__``, ``tolist``, ``cpu``/``numpy``), host data
    made into a device tensor (``tensor``/``as_tensor`` with a ``device``), and the ops whose output size
    depends on the data (``nonzero``, boolean masks, ``masked_select``, ``unique``). ``x.to(device)`` of a
    host tensor cannot be told apart from a no-op on a CPU-only machine: ``benchmarks/gpu_check.py`` counts
    those on a GPU (``torch.cuda.set_sync_debug_mode``). Each record names the line that called the op.
    """

    READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu", "numpy"}
    DATA_DEPENDENT = {"nonzero", "masked_select", "unique", "argwhere", "bincount", "repeat_interleave"}

    def __init__(self, start: int = 2, steps: int = 4) -> None:
        self.start, self.stop = start, start + steps
        self.records: list[str] = []
        self._mode: TorchFunctionMode | None = None

    #: code whose host reads count: ours, Lightning's, torchmetrics' and torch's weight averaging. Reads deep
    #: inside torch's own kernels' Python (e.g. CPU-only optimizer paths) say nothing about a GPU step.
    WATCHED = ("lit_vision", "lightning", "torchmetrics", "swa_utils")

    def _record(self, what: str) -> None:
        frames = [
            f for f in traceback.extract_stack() if not f.filename.endswith(("helpers.py", "overrides.py"))
        ]
        caller = frames[-1]  # the line that called the op
        if any(name in caller.filename for name in self.WATCHED):
            self.records.append(f"{what} at {Path(caller.filename).name}:{caller.lineno} ({caller.name})")

    def _mode_class(self) -> type[TorchFunctionMode]:
        recorder = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = getattr(func, "__name__", str(func))
                if name in recorder.READS or name in recorder.DATA_DEPENDENT:
                    recorder._record(name)
                elif name in ("__getitem__", "__setitem__", "index_put_") and any(
                    isinstance(a, torch.Tensor) and a.dtype == torch.bool
                    for a in (args[1] if isinstance(args[1], tuple) else (args[1],))
                ):
                    recorder._record(f"{name} with a boolean mask")
                elif name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
                    recorder._record(f"{name} onto a device")  # host data copied to the device
                return func(*args, **kwargs)

        return Mode

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.start and self._mode is None:
            self._mode = self._mode_class()()
            self._mode.__enter__()
        elif trainer.global_step == self.stop and self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    def on_train_end(self, trainer, pl_module) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None


def quiet_trainer(**kwargs) -> L.Trainer:
    """A CPU Trainer with no logger, checkpoints, progress bar or model summary; ``kwargs`` add or override
    (callbacks, max_epochs/max_steps, limit_val_batches, ...)."""
    settings = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
    }
    return L.Trainer(**{**settings, **kwargs})


class ShardItemLog(L.Callback):
    """Every item the streaming back-end decodes in this process, as ``(split, epoch, source index)``
    (``index`` is ``None`` where the loader returns none), so tests can check sharding and resume.

    Patches ``ShardDataset.__getitem__`` from ``setup`` to ``teardown``; needs ``data.num_workers=0`` (worker
    processes would log into their own copies). ``out_dir``: also write ``rank<R>-items.json`` at the end
    of ``fit``. ``ShardItemLog.latest`` is the instance of the latest run, also one that stopped with an
    exception. ``trained_indices`` are the train items of the batches actually trained (Lightning fetches one
    batch ahead).
    """

    latest: ShardItemLog | None = None

    def __init__(self, out_dir: str | None = None) -> None:
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.items: list[tuple[str, int, int | None]] = []
        self.trained = 0
        self.batch_size = 0
        self._original = None
        ShardItemLog.latest = self

    def setup(self, trainer, pl_module, stage) -> None:
        from lit_vision.data.streaming import ShardDataset

        original = self._original = ShardDataset.__getitem__
        log = self

        def logged(dataset, index):
            out = original(dataset, index)
            split = dataset.where.rsplit("/", 1)[-1]
            log.items.append((split, trainer.current_epoch, int(out[2]) if len(out) > 2 else None))
            return out

        ShardDataset.__getitem__ = logged

    def teardown(self, trainer, pl_module, stage) -> None:
        from lit_vision.data.streaming import ShardDataset

        if self._original is not None:
            ShardDataset.__getitem__ = self._original

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.trained += 1
        self.batch_size = len(batch[1])

    @property
    def trained_indices(self) -> list[int]:
        train = [index for split, _, index in self.items if split == "train"]
        return train[: self.trained * self.batch_size]

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / f"rank{trainer.global_rank}-items.json"
            path.write_text(json.dumps(self.items))
