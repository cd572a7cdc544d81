"""Write predictions to CSV batch by batch (Lightning's ``BasePredictionWriter``)."""

from __future__ import annotations

import csv
import heapq
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

__all__ = ["CSVPredictionWriter", "FilePredictionWriter"]


class CSVPredictionWriter(BasePredictionWriter):
    """Append one CSV row per image as each predict batch ends (nothing accumulates in memory).

    Columns: ``index``, ``path``, ``target`` (class name, empty when unknown), ``prediction``,
    ``confidence``, then ``prob_<class>`` for every class.

    Args:
        output_dir: folder of the CSV. Default: the run directory of ``--ckpt_path`` (the parent of its
            ``checkpoints/`` folder), else the trainer's log directory.
        filename: CSV file name; under DDP each rank writes ``<stem>.rank<R>.csv``.
    """

    def __init__(self, output_dir: str | None = None, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.filename = filename
        self.path: Path | None = None
        self._file: Any = None
        self._writer: Any = None
        self._paths: list[str] | None = None
        self._class_names: list[str] = []

    def _resolve_dir(self, trainer: L.Trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        ckpt = getattr(trainer, "ckpt_path", None)
        if ckpt:
            ckpt_dir = Path(ckpt).resolve().parent
            return ckpt_dir.parent if ckpt_dir.name == "checkpoints" else ckpt_dir
        return Path(trainer.log_dir or trainer.default_root_dir)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out_dir = self._resolve_dir(trainer)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = self.filename
        if trainer.world_size > 1:
            stem, _, ext = name.rpartition(".")
            name = f"{stem}.rank{trainer.global_rank}.{ext}"
        self.path = out_dir / name
        self._class_names = list(getattr(pl_module, "class_names", []))
        dm = trainer.datamodule
        self._paths = dm.predict_paths() if dm is not None and hasattr(dm, "predict_paths") else None
        self._file = open(self.path, "w", newline="")  # noqa: SIM115 (closed in on_predict_end)
        self._writer = csv.writer(self._file)
        header = ["index", "path", "target", "prediction", "confidence"]
        self._writer.writerow(header + [f"prob_{c}" for c in self._class_names])

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Tensor,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        probs = prediction.detach().float().cpu()
        conf, pred = probs.max(-1)
        targets = batch[1].tolist() if len(batch) > 1 else [None] * len(probs)
        indices = batch[2].tolist() if len(batch) > 2 else list(batch_indices or range(len(probs)))
        names = self._class_names or [str(i) for i in range(probs.shape[-1])]
        rows = zip(indices, pred.tolist(), conf.tolist(), targets, probs.tolist(), strict=True)
        for idx, p, c, t, row in rows:
            path = self._paths[idx] if self._paths is not None else ""
            target = names[t] if t is not None and 0 <= t < len(names) else ""
            self._writer.writerow([idx, path, target, names[p], f"{c:.6f}", *(f"{v:.6f}" for v in row)])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.on_predict_end(trainer, pl_module)


class FilePredictionWriter(BasePredictionWriter):
    """CSV rows for ``predict.py``: ``index, path, target, prediction, confidence, error, prob_<class>...``.

    Rows are appended batch by batch (nothing accumulates in memory). Under DDP each rank writes its own part
    file and rank 0 merges the parts in input order at the end. Unreadable inputs get an ``error`` and empty
    prediction columns. ``summary`` (rank 0, after ``on_predict_end``) counts rows, failures and, where the
    inputs carried labels, correct predictions.

    Args:
        path: the CSV to write.
        items_paths: the path shown for each input index.
        class_names: class names in label order (from the checkpoint).
    """

    def __init__(self, path: str | Path, items_paths: list[str], class_names: list[str]) -> None:
        super().__init__(write_interval="batch")
        self.path = Path(path)
        self.items_paths = items_paths
        self.class_names = class_names
        self.summary: dict[str, Any] = {}
        self._file: Any = None
        self._writer: Any = None
        self._counts = {"rows": 0, "failed": 0, "labelled": 0, "correct": 0}

    def _part(self, trainer: L.Trainer) -> Path:
        if trainer.world_size == 1:
            return self.path
        return self.path.with_name(f"{self.path.stem}.rank{trainer.global_rank}{self.path.suffix}")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._part(trainer), "w", newline="")  # noqa: SIM115 (closed in on_predict_end)
        self._writer = csv.writer(self._file)
        if trainer.world_size == 1:
            self._writer.writerow(self.header)
        self._counts = dict.fromkeys(self._counts, 0)

    @property
    def header(self) -> list[str]:
        return ["index", "path", "target", "prediction", "confidence", "error"] + [
            f"prob_{c}" for c in self.class_names
        ]

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Tensor,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        _, targets, indices, errors = batch
        probs = prediction.detach().float().cpu()
        conf, pred = probs.max(-1)
        names = self.class_names
        for i, t, p, c, err, row in zip(
            indices.tolist(),
            targets.tolist(),
            pred.tolist(),
            conf.tolist(),
            errors,
            probs.tolist(),
            strict=True,
        ):
            target = names[t] if t >= 0 else ""
            self._counts["rows"] += 1
            if err:
                self._counts["failed"] += 1
                self._writer.writerow([i, self.items_paths[i], target, "", "", err] + [""] * len(names))
                continue
            if t >= 0:
                self._counts["labelled"] += 1
                self._counts["correct"] += int(p == t)
            self._writer.writerow(
                [i, self.items_paths[i], target, names[p], f"{c:.6f}", ""] + [f"{v:.6f}" for v in row]
            )

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = self._writer = None
        counts = torch.tensor([self._counts[k] for k in ("rows", "failed", "labelled", "correct")])
        if trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
            trainer.strategy.barrier("FilePredictionWriter.merge")
            if trainer.is_global_zero:
                self._merge(trainer.world_size)
        rows, failed, labelled, correct = (int(v) for v in counts)
        self.summary = {
            "images": rows,
            "failed": failed,
            "labelled": labelled,
            "accuracy": correct / labelled if labelled else None,
        }

    def _merge(self, world_size: int) -> None:
        """Rank parts -> one CSV in input order, streamed (a k-way merge on the index column)."""
        parts = [
            self.path.with_name(f"{self.path.stem}.rank{r}{self.path.suffix}") for r in range(world_size)
        ]
        files = [open(p, newline="") for p in parts]  # noqa: SIM115 (closed below)
        with open(self.path, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(self.header)
            # each part is in increasing index order (the unrepeated sampler keeps order within a rank)
            for row in heapq.merge(*(csv.reader(f) for f in files), key=lambda row: int(row[0])):
                writer.writerow(row)
        for f, p in zip(files, parts, strict=True):
            f.close()
            p.unlink()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
