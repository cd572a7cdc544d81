"""Predict on any images with checkpoints: ``python predict.py --ckpt best.ckpt INPUTS --out p.csv``.

INPUTS are image files, folders (recursive; a folder of class folders named like the checkpoint's classes is
read as labelled), or dataset splits such as ``cifar10:test`` (read from ``--data-dir``). The CSV has one row
per input: ``index, path, target, prediction, confidence, error``, the ``--topk`` classes, and
``prob_<class>...``; class names come from the checkpoint (``--format jsonl``: one JSON object per line).
Several ``--ckpt`` average their probabilities (an ensemble); ``--tta`` averages flipped and translated
views, for every image or (``--tta-threshold``) only for those predicted with less confidence. Unreadable
files get an ``error`` and the run goes on. With labels, the accuracy is printed and written to
``<out>.summary.json``.

On a CUDA GPU the defaults change to what is fast there: bf16 autocast (``--precision auto``), pinned host
memory for the batches, and every TTA view of a batch in one forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader

from lit_vision.apps import add_checkpoint_arguments, inference_precision, runs_on_cuda
from lit_vision.callbacks.prediction_writer import PredictionWriter
from lit_vision.data.files import PredictDataset, PredictItem, collect_inputs
from lit_vision.data.sources import DatasetError
from lit_vision.errors import exit_on_error
from lit_vision.models.inference.classifier_loading import load_classifier
from lit_vision.models.inference.ensemble import Ensemble
from lit_vision.models.inference.test_time_views import TestTimeViews

__all__ = ["build_parser", "main", "predict", "predict_items"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="image files, folders, or dataset splits (cifar10:test)")
    add_checkpoint_arguments(parser, ensemble=True)
    parser.add_argument(
        "--out", default=None, help="file to write (default: predictions.csv, or .jsonl with --format jsonl)"
    )
    parser.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="csv (default) or jsonl")
    parser.add_argument(
        "--topk", type=int, default=0, help="also write the K most probable classes and their probabilities"
    )
    parser.add_argument(
        "--no-probs", dest="probs", action="store_false", help="leave out the per-class probability columns"
    )
    parser.add_argument("--tta", action="store_true", help="average over flipped/translated views")
    parser.add_argument(
        "--tta-threshold",
        type=float,
        default=None,
        help="with --tta: run the views only for images whose plain confidence is below this (0..1;\n"
        "1: every image, 0: none); the summary counts the images that got them",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    parser.add_argument(
        "--tta-batch",
        type=int,
        default=None,
        help="images per forward pass under --tta (a batch's views are chunked to it); default: 256 on CPU\n"
        "(chunks that stay in CPU caches), every view of a batch at once on CUDA",
    )
    parser.add_argument(
        "--num-workers", type=int, default=None, help="decoding processes (default: min(4, CPUs); 0: inline)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="dataset folder for cifar10:test etc. (default: data/<name>)"
    )
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (Lightning)")
    parser.add_argument("--devices", default="1", help="devices (Lightning); >1 runs DDP, same output")
    parser.add_argument(
        "--precision",
        default="auto",
        help="Lightning precision, e.g. 32-true for exact fp32 on a GPU; auto (default): bf16-mixed on a\n"
        "CUDA GPU with bf16 (16-mixed on older ones), 32-true elsewhere",
    )
    return parser


def predict_items(
    model: L.LightningModule,
    items: Sequence[PredictItem],
    out: str | Path,
    batch_size: int = 256,
    num_workers: int | None = None,
    keep_probs: bool = False,
    callbacks: Sequence[Callback] = (),
    writer_kwargs: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> tuple[dict[str, Any], Tensor | None]:
    """The one inference loop: Lightning's predict loop over ``items`` with :class:`PredictionWriter` writing
    ``out`` (and its summary). Returns the summary and, with ``keep_probs``, the (N, K) probabilities in
    input order (rows of unreadable inputs included; their CSV ``error`` says which). ``predict.py``,
    ``python -m lit_vision.report`` and ``python -m lit_vision.explain`` (with its overlay writer in
    ``callbacks``) all run it. ``writer_kwargs``: :class:`PredictionWriter`'s ``topk``, ``file_format``,
    ``probs``."""
    dataset = PredictDataset(items, model.input_size)
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    accelerator = trainer_kwargs.get("accelerator", "auto")
    if trainer_kwargs.get("precision") == "auto":
        trainer_kwargs = {**trainer_kwargs, "precision": inference_precision(accelerator)}
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        persistent_workers=False,
        pin_memory=runs_on_cuda(accelerator),  # page-locked batches: the copy to the GPU runs asynchronously
    )
    out = Path(out)
    writer = PredictionWriter(
        str(out.parent), out.name, item_paths=[it.path for it in items], **(writer_kwargs or {})
    )
    trainer_kwargs = {
        "logger": False,
        "enable_model_summary": False,
        "enable_progress_bar": len(items) > 10 * batch_size,
        **trainer_kwargs,
    }
    trainer = L.Trainer(callbacks=[writer, *callbacks], **trainer_kwargs)
    batches = trainer.predict(model, loader, return_predictions=keep_probs)
    probs = torch.cat(batches) if keep_probs and batches else None  # type: ignore[arg-type]
    return {**writer.summary, "precision": trainer.precision}, probs


def predict(
    checkpoints: Sequence[str | Path],
    inputs: Sequence[str],
    out: str | Path,
    tta: bool = False,
    batch_size: int = 256,
    num_workers: int | None = None,
    data_dir: str | Path | None = None,
    trust_checkpoint: bool = False,
    tta_batch: int | None = None,
    tta_threshold: float | None = None,
    topk: int = 0,
    file_format: str = "csv",
    probs: bool = True,
    **trainer_kwargs: Any,
) -> dict[str, Any]:
    """Write the prediction CSV; return the summary (images, failed, labelled, accuracy, precision).
    ``trust_checkpoint`` allows checkpoints with pickled objects (see
    ``lit_vision.models.inference.classifier_loading``).
    ``tta_batch``: images per forward pass under ``tta``; ``None``: 256 on CPU, a whole batch's views on
    CUDA. ``tta_threshold``: see :class:`Ensemble`. ``topk``, ``file_format``, ``probs``: see
    :class:`PredictionWriter`. ``precision="auto"`` in ``trainer_kwargs``: see
    ``lit_vision.apps.inference_precision``."""
    if tta_batch is None:
        on_cuda = runs_on_cuda(trainer_kwargs.get("accelerator", "auto"))
        tta_batch = len(TestTimeViews().views) * batch_size if on_cuda else 256
    members = [load_classifier(c, trust_checkpoint) for c in checkpoints]
    ensemble = Ensemble(members, tta=tta, tta_max_batch=tta_batch, tta_threshold=tta_threshold)
    items = collect_inputs(inputs, ensemble.class_names, None if data_dir is None else Path(data_dir))
    writer_kwargs = {"topk": topk, "file_format": file_format, "probs": probs}
    summary, _ = predict_items(
        ensemble, items, out, batch_size, num_workers, writer_kwargs=writer_kwargs, **trainer_kwargs
    )
    summary = {**summary, "checkpoints": [str(c) for c in checkpoints], "tta": tta, "csv": str(out)}
    if tta:
        summary.update(tta_threshold=tta_threshold, tta_images=ensemble.tta_images)
    if rank_zero_only.rank == 0:  # the writer's summary, with what only this app knows
        Path(out).with_suffix(".summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _devices(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    out = args.out or f"predictions.{args.format}"
    with exit_on_error(DatasetError, ValueError, FileNotFoundError):
        summary = predict(
            args.ckpt,
            args.inputs,
            out,
            tta=args.tta,
            tta_threshold=args.tta_threshold,
            topk=args.topk,
            file_format=args.format,
            probs=args.probs,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            data_dir=args.data_dir,
            trust_checkpoint=args.trust_checkpoint,
            tta_batch=args.tta_batch,
            accelerator=args.accelerator,
            devices=_devices(args.devices),
            precision=args.precision,
        )
    line = f"{summary['images']} images -> {out}; {summary['failed']} could not be read"
    if summary["accuracy"] is not None:
        line += f"; accuracy {100 * summary['accuracy']:.2f}% on {summary['labelled']} labelled images"
    if args.tta and args.tta_threshold is not None:
        line += f"; TTA views for {summary['tta_images']} images (confidence < {args.tta_threshold})"
    print(line)
    return summary


if __name__ == "__main__":
    main()
