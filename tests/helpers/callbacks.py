"""Lightning callbacks that tests hand to the CLI by class path (``helpers.StopAt``, ...): they stop a run
where a test wants it stopped, or record what a run did for the test to check."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


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
