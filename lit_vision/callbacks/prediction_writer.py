"""The one prediction CSV writer (a ``BasePredictionWriter``) of ``train.py predict`` and ``predict.py``.

Columns: ``index, path, target, prediction, confidence, error, prob_<class>...``. Rows are appended batch by
batch (nothing accumulates in memory); under DDP each rank writes a part file and rank 0 merges the parts in
input order. Inputs that could not be read get their ``error`` and empty prediction columns. ``summary``
(after ``predict``) counts the rows, the failures and, where the inputs carry labels, the correct
predictions; it is also written beside the CSV as ``<stem>.summary.json``.

Batches are ``(images, targets, index)`` (the datamodule's predict loader; targets -1 when unknown) or
``(images, targets, index, errors)`` (``lit_vision.data.files.PredictDataset``: one message per input, empty
when it was read).
"""

from __future__ import annotations

import csv
import heapq
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

__all__ = ["CSVPredictionWriter", "PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Write one CSV row per image as each predict batch ends, with an error column, a DDP merge and a
    summary (see the module docstring).

    Args:
        output_dir: folder of the CSV. Default: the run directory of ``--ckpt_path`` (the parent of its
            ``checkpoints/`` folder), else the trainer's log directory.
        filename: CSV file name (under DDP each rank first writes ``<stem>.rank<R>.csv``).
        item_paths: the path shown for each input index (``predict.py`` passes its inputs); default: the
            datamodule's ``predict_paths()``.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        filename: str = "predictions.csv",
        item_paths: list[str] | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.filename = filename
        self.item_paths = item_paths
        self.path: Path | None = None
        self.summary: dict[str, Any] = {}
        self._class_names: list[str] = []
        self._paths: list[str] | None = None
        self._file: Any = None
        self._writer: Any = None
        self._counts = {"rows": 0, "failed": 0, "labelled": 0, "correct": 0}

    def _resolve_path(self, trainer: L.Trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir) / self.filename
        ckpt = getattr(trainer, "ckpt_path", None)
        if ckpt:
            ckpt_dir = Path(ckpt).resolve().parent
            return (ckpt_dir.parent if ckpt_dir.name == "checkpoints" else ckpt_dir) / self.filename
        return Path(trainer.log_dir or trainer.default_root_dir) / self.filename

    def _part(self, rank: int) -> Path:
        assert self.path is not None
        return self.path.with_name(f"{self.path.stem}.rank{rank}{self.path.suffix}")

    @property
    def header(self) -> list[str]:
        return ["index", "path", "target", "prediction", "confidence", "error"] + [
            f"prob_{c}" for c in self._class_names
        ]

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path = self._resolve_path(trainer)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._class_names = list(getattr(pl_module, "class_names", []))
        dm = trainer.datamodule
        self._paths = self.item_paths
        if self._paths is None and dm is not None and hasattr(dm, "predict_paths"):
            self._paths = dm.predict_paths()
        target = self.path if trainer.world_size == 1 else self._part(trainer.global_rank)
        self._file = open(target, "w", newline="")  # noqa: SIM115 (closed in on_predict_end)
        self._writer = csv.writer(self._file)
        if trainer.world_size == 1:
            self._writer.writerow(self.header)
        self._counts = dict.fromkeys(self._counts, 0)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Tensor | Mapping[str, Tensor],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        # a predict_step returns probabilities, or a mapping holding them under "probs" with more outputs
        # for other writers (lit_vision.explain adds its heatmaps)
        probs = prediction["probs"] if isinstance(prediction, Mapping) else prediction
        probs = probs.detach().float().cpu()
        if not self._class_names:  # a module without class names: the label index
            self._class_names = [str(i) for i in range(probs.shape[-1])]
        conf, pred = probs.max(-1)
        n = len(probs)
        targets = batch[1].tolist() if len(batch) > 1 else [-1] * n
        indices = batch[2].tolist() if len(batch) > 2 else list(batch_indices or range(n))
        errors = list(batch[3]) if len(batch) > 3 else [""] * n
        names = self._class_names
        rows = zip(indices, targets, pred.tolist(), conf.tolist(), errors, probs.tolist(), strict=True)
        for i, t, p, c, err, row in rows:
            path = self._paths[i] if self._paths is not None else ""
            target = names[t] if t is not None and 0 <= t < len(names) else ""
            self._counts["rows"] += 1
            if err:
                self._counts["failed"] += 1
                self._writer.writerow([i, path, target, "", "", err] + [""] * len(names))
                continue
            if target:
                self._counts["labelled"] += 1
                self._counts["correct"] += int(p == t)
            self._writer.writerow([i, path, target, names[p], f"{c:.6f}", ""] + [f"{v:.6f}" for v in row])

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is None:
            return
        self._close()
        counts = torch.tensor([self._counts[k] for k in ("rows", "failed", "labelled", "correct")])
        if trainer.world_size > 1:
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
            trainer.strategy.barrier("PredictionWriter.merge")
            if trainer.is_global_zero:
                self._merge(trainer.world_size)
        rows, failed, labelled, correct = (int(v) for v in counts)
        self.summary = {
            "images": rows,
            "failed": failed,
            "labelled": labelled,
            "accuracy": correct / labelled if labelled else None,
            "csv": str(self.path),
        }
        if trainer.is_global_zero:
            assert self.path is not None
            self.path.with_suffix(".summary.json").write_text(json.dumps(self.summary, indent=2))

    def _merge(self, world_size: int) -> None:
        """Rank parts -> one CSV in input order, streamed (a k-way merge on the index column)."""
        assert self.path is not None
        parts = [self._part(r) for r in range(world_size)]
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

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._close()


#: the former name of the CLI's writer (kept so configs that name it keep working)
CSVPredictionWriter = PredictionWriter
