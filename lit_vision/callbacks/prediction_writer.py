"""The one prediction writer (a ``BasePredictionWriter``) of ``train.py predict`` and ``predict.py``.

CSV columns: ``index, path, target, prediction, confidence, error``, then ``top<j>, top<j>_prob`` for
``j = 1..topk`` and ``prob_<class>...`` (unless ``probs`` is off). JSON Lines (``file_format: jsonl``): one
object per input with the same fields, ``topk`` as a list of ``{class, prob}`` and ``probs`` as a
``{class: prob}`` mapping; empty fields are ``null``. Rows are appended batch by
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
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from lit_vision.errors import ConfigError

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Write one row per image as each predict batch ends, with an error column, a DDP merge and a
    summary (see the module docstring).

    Args:
        output_dir: folder of the file. Default: the run directory of ``--ckpt_path`` (the parent of its
            ``checkpoints/`` folder), else the trainer's log directory.
        filename: file name (under DDP each rank first writes ``<stem>.rank<R><suffix>``).
        item_paths: the path shown for each input index (``predict.py`` passes its inputs); default: the
            datamodule's ``predict_paths()``.
        topk: also write the ``topk`` most probable classes and their probabilities (0: none; at most the
            number of classes).
        file_format: ``csv`` or ``jsonl`` (JSON Lines: one object per line).
        probs: write every class's probability (off: keeps files small for many classes, with ``topk``).
    """

    def __init__(
        self,
        output_dir: str | None = None,
        filename: str = "predictions.csv",
        item_paths: list[str] | None = None,
        topk: int = 0,
        file_format: Literal["csv", "jsonl"] = "csv",
        probs: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        # train.py sets these as --prediction_writer.*, predict.py as --topk/--format: the message names both.
        if not topk >= 0:
            raise ConfigError(
                f"--prediction_writer.topk (predict.py: --topk) must be >= 0 (0: none), got {topk}."
            )
        if file_format not in ("csv", "jsonl"):
            raise ConfigError(
                "--prediction_writer.file_format (predict.py: --format) must be csv or jsonl, "
                f"got {file_format!r}."
            )
        self.output_dir = output_dir
        self.filename = filename
        self.item_paths = item_paths
        self.topk = topk
        self.file_format = file_format
        self.probs = probs
        self.path: Path | None = None
        self.summary: dict[str, Any] = {}
        self._class_names: list[str] = []
        self._paths: list[str] | None = None
        self._file: Any = None
        self._writer: Any = None
        self._header_written = False
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
    def _k(self) -> int:
        return min(self.topk, len(self._class_names))

    @property
    def header(self) -> list[str]:
        """The CSV columns (known once the class names are)."""
        top = [col for j in range(1, self._k + 1) for col in (f"top{j}", f"top{j}_prob")]
        probs = [f"prob_{c}" for c in self._class_names] if self.probs else []
        return ["index", "path", "target", "prediction", "confidence", "error", *top, *probs]

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
        # the CSV header waits for the first batch: a module without class names learns them there
        self._header_written = trainer.world_size > 1 or self.file_format != "csv"
        self._counts = dict.fromkeys(self._counts, 0)

    def _write_header(self) -> None:
        if not self._header_written:
            self._writer.writerow(self.header)
            self._header_written = True

    def _write(self, record: dict[str, Any]) -> None:
        """One row: ``record`` holds index, path, target, prediction, confidence, error, topk, probs."""
        if self.file_format == "jsonl":
            self._file.write(json.dumps(record) + "\n")
            return
        row = [record["index"], record["path"], record["target"] or "", record["prediction"] or ""]
        row += ["" if record["confidence"] is None else f"{record['confidence']:.6f}", record["error"] or ""]
        for j in range(self._k):
            top = record["topk"][j] if record["topk"] else None
            row += [top["class"], f"{top['prob']:.6f}"] if top else ["", ""]
        if self.probs:
            probs = record["probs"]
            row += [f"{probs[c]:.6f}" for c in self._class_names] if probs else [""] * len(self._class_names)
        self._writer.writerow(row)

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
        self._write_header()
        conf, pred = probs.max(-1)
        top_p, top_i = probs.topk(self._k, dim=-1)  # (N, k), most probable first
        n = len(probs)
        targets = batch[1].tolist() if len(batch) > 1 else [-1] * n
        indices = batch[2].tolist() if len(batch) > 2 else list(batch_indices or range(n))
        errors = list(batch[3]) if len(batch) > 3 else [""] * n
        names = self._class_names
        columns = (pred.tolist(), conf.tolist(), top_i.tolist(), top_p.tolist(), probs.tolist())
        for i, t, err, p, c, ti, tp, row in zip(indices, targets, errors, *columns, strict=True):
            path = self._paths[i] if self._paths is not None else ""
            target = names[t] if t is not None and 0 <= t < len(names) else None
            self._counts["rows"] += 1
            record = {"index": i, "path": path, "target": target, "prediction": None, "confidence": None}
            record.update(error=err or None, topk=None, probs=None)
            if err:
                self._counts["failed"] += 1
            else:
                if target is not None:
                    self._counts["labelled"] += 1
                    self._counts["correct"] += int(p == t)
                record.update(prediction=names[p], confidence=c)
                record["topk"] = [{"class": names[k], "prob": v} for k, v in zip(ti, tp, strict=True)]
                if self.probs:
                    record["probs"] = dict(zip(names, row, strict=True))
            self._write(record)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._file is None:
            return
        self._write_header()  # a run with no batch still gets a well-formed (empty) CSV
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
        """Rank parts -> one file in input order, streamed (a k-way merge on the index)."""
        assert self.path is not None
        parts = [self._part(r) for r in range(world_size)]
        files = [open(p, newline="") for p in parts]  # noqa: SIM115 (closed below)
        # each part is in increasing index order (the unrepeated sampler keeps order within a rank)
        with open(self.path, "w", newline="") as out:
            if self.file_format == "jsonl":
                lines = heapq.merge(*files, key=lambda line: json.loads(line)["index"])
                out.writelines(lines)
            else:
                writer = csv.writer(out)
                writer.writerow(self.header)
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
