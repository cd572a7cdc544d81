"""Evaluation report of a checkpoint on a labelled split, written beside the checkpoint's run.

    python -m lit_vision.report --ckpt runs/x/version_0/checkpoints/best.ckpt test/ [--out DIR] [--tta]

The split is anything ``predict.py`` reads with labels: an ImageFolder ``test/`` (class folders named like
the checkpoint's classes) or ``cifar10:test`` (``--data-dir``). Files (default: ``<run>/report/``):

* ``report.md``: the key numbers (accuracy, top-k, macro F1, ECE, NLL) and links to everything below;
* ``per_class.csv``: precision, recall, F1 and support per class (torchmetrics);
* ``confusion_matrix.png``: rows normalized (each true class sums to 1);
* ``reliability.png``: accuracy vs confidence in 15 bins, with the expected calibration error (Guo et al.,
  2017: ``ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)|``);
* ``mistakes.png``: the most confident wrong predictions, captioned ``true -> predicted (confidence)``;
* ``samples.png`` and ``augmented.png``: images of the split as the model sees them, and after the training
  augmentation recorded in the checkpoint (random crop / flip / Cutout);
* ``curves.png``: training and validation loss and accuracy per epoch from the run's ``metrics.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lit_vision.data.files import PredictDataset, collect_inputs
from lit_vision.data.sources import DatasetError
from lit_vision.data.transforms import BatchAugment
from lit_vision.models.ensemble import Ensemble, load_classifier

__all__ = ["evaluate", "main", "reliability_bins", "write_report"]


def reliability_bins(probs: Tensor, targets: Tensor, n_bins: int = 15) -> dict[str, Tensor]:
    """Per confidence bin (equal width on [0, 1]): count, mean confidence, accuracy."""
    conf, pred = probs.max(-1)
    correct = (pred == targets).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    which = torch.bucketize(conf, edges[1:-1], right=True)  # bin b holds (edges[b], edges[b+1]]
    count = torch.zeros(n_bins).scatter_add_(0, which, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins).scatter_add_(0, which, conf)
    acc_sum = torch.zeros(n_bins).scatter_add_(0, which, correct)
    safe = count.clamp_min(1)
    return {"edges": edges, "count": count, "confidence": conf_sum / safe, "accuracy": acc_sum / safe}


def evaluate(
    ckpts: Sequence[str | Path], inputs: Sequence[str], data_dir: str | Path | None = None, tta: bool = False
) -> dict[str, Any]:
    """Probabilities, targets, images and metrics of a labelled split (held in memory: a test split)."""
    ensemble = Ensemble([load_classifier(c) for c in ckpts], tta=tta).eval()
    items = collect_inputs(inputs, ensemble.class_names, None if data_dir is None else Path(data_dir))
    if any(it.target is None for it in items):
        raise DatasetError("The report needs labelled inputs: an ImageFolder test/ tree or cifar10:test.")
    dataset = PredictDataset(items, ensemble.input_size)
    probs, targets, images, failed = [], [], [], []
    with torch.no_grad():
        for batch_images, batch_targets, index, errors in DataLoader(dataset, batch_size=256):
            ok = torch.tensor([not e for e in errors])
            failed += [items[i].path for i, e in zip(index.tolist(), errors, strict=True) if e]
            probs.append(ensemble(batch_images[ok]))
            targets.append(batch_targets[ok])
            images.append(batch_images[ok])
    p, y = torch.cat(probs), torch.cat(targets)
    k = len(ensemble.class_names)
    metrics: dict[str, Any] = {
        "images": len(y),
        "unreadable": failed,
        "accuracy": float(MulticlassAccuracy(k, average="micro")(p, y)),
        f"top{min(5, k)}_accuracy": float(MulticlassAccuracy(k, top_k=min(5, k), average="micro")(p, y)),
        "macro_f1": float(MulticlassF1Score(k, average="macro")(p, y)),
        "ece": float(MulticlassCalibrationError(k, n_bins=15, norm="l1")(p, y)),
        "nll": float(torch.nn.functional.nll_loss(p.clamp_min(1e-12).log(), y)),
        "per_class": {
            "precision": MulticlassPrecision(k, average=None)(p, y),
            "recall": MulticlassRecall(k, average=None)(p, y),
            "f1": MulticlassF1Score(k, average=None)(p, y),
            "support": torch.bincount(y, minlength=k),
        },
        "confusion": MulticlassConfusionMatrix(k, normalize="true")(p, y),
    }
    return {
        "ensemble": ensemble,
        "probs": p,
        "targets": y,
        "images": torch.cat(images),
        "metrics": metrics,
    }


def _grid(images: Tensor, captions: list[str], path: Path, cols: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions, strict=False):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(cap, fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _training_curves(metrics_csv: Path, path: Path) -> bool:
    if not metrics_csv.is_file():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    series: dict[str, dict[int, float]] = {}
    for r in rows:
        for key in ("train/loss_epoch", "val/loss", "train/acc", "val/acc"):
            if r.get(key):
                series.setdefault(key, {})[int(float(r["epoch"]))] = float(r[key])
    if not series:
        return False
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (
        ("train/loss_epoch", ax_loss),
        ("val/loss", ax_loss),
        ("train/acc", ax_acc),
        ("val/acc", ax_acc),
    ):
        if key in series:
            epochs = sorted(series[key])
            ax.plot(epochs, [series[key][e] for e in epochs], marker="o", label=key)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(result: dict[str, Any], out: Path, ckpt: Path, n_mistakes: int = 32) -> Path:
    """Write every file of the module docstring into ``out``; return the markdown summary's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    names = result["ensemble"].class_names
    m = result["metrics"]
    probs, y, images = result["probs"], result["targets"], result["images"]

    with open(out / "per_class.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        pc = m["per_class"]
        for i, name in enumerate(names):
            writer.writerow(
                [
                    name,
                    *(f"{float(pc[k][i]):.4f}" for k in ("precision", "recall", "f1")),
                    int(pc["support"][i]),
                ]
            )

    cm = m["confusion"].numpy()
    size = max(4.0, 0.45 * len(names))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    shown = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    if len(names) <= 20:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(
                    j,
                    i,
                    f"{cm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if cm[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(shown)
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=120)
    plt.close(fig)

    bins = reliability_bins(probs, y)
    fig, ax = plt.subplots(figsize=(4, 4))
    centers = (bins["edges"][1:] + bins["edges"][:-1]) / 2
    filled = bins["count"] > 0
    ax.bar(centers[filled], bins["accuracy"][filled], width=1 / 15, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {100 * m['ece']:.2f}%")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=120)
    plt.close(fig)

    conf, pred = probs.max(-1)
    wrong = (pred != y).nonzero().flatten()
    worst = wrong[conf[wrong].argsort(descending=True)][:n_mistakes]
    if len(worst):
        captions = [f"{names[int(y[i])]} -> {names[int(pred[i])]} ({float(conf[i]):.2f})" for i in worst]
        _grid(images[worst], captions, out / "mistakes.png")

    first = torch.arange(min(32, len(images)))
    _grid(images[first], [names[int(y[i])] for i in first], out / "samples.png")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False).get("datamodule_hyper_parameters", {})
    augment = BatchAugment(
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
        saved.get("crop_padding", 4),
        saved.get("hflip", True),
        saved.get("cutout", 0),
    )
    augmented = (augment(images[first], train=True).clamp(0, 1) * 255).round().to(torch.uint8)
    _grid(augmented, [names[int(y[i])] for i in first], out / "augmented.png")

    has_curves = _training_curves(ckpt.resolve().parent.parent / "metrics.csv", out / "curves.png")

    topk = next(k for k in m if k.startswith("top"))
    lines = [
        f"# Evaluation report: `{ckpt}`",
        "",
        f"{m['images']} images"
        + (f", {len(m['unreadable'])} unreadable (skipped)" if m["unreadable"] else "")
        + ".",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy | {100 * m['accuracy']:.2f}% |",
        f"| {topk.replace('_', ' ')} | {100 * m[topk]:.2f}% |",
        f"| macro F1 | {100 * m['macro_f1']:.2f}% |",
        f"| expected calibration error (15 bins) | {100 * m['ece']:.2f}% |",
        f"| negative log-likelihood | {m['nll']:.4f} |",
        "",
        "Files: [per_class.csv](per_class.csv), ![confusion matrix](confusion_matrix.png), "
        "![reliability](reliability.png), ![mistakes](mistakes.png), ![samples](samples.png), "
        "![augmented](augmented.png)"
        + (", ![curves](curves.png)" if has_curves else " (no metrics.csv found)"),
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m lit_vision.report", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="a labelled split: ImageFolder test/ or cifar10:test")
    parser.add_argument("--ckpt", action="append", required=True, help="checkpoint (repeat: ensemble)")
    parser.add_argument("--out", default=None, help="output folder (default: <run>/report)")
    parser.add_argument("--data-dir", default=None, help="dataset folder for cifar10:test etc.")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args(argv)
    ckpt = Path(args.ckpt[0])
    run_dir = (
        ckpt.resolve().parent.parent if ckpt.resolve().parent.name == "checkpoints" else ckpt.resolve().parent
    )
    out = Path(args.out) if args.out else run_dir / "report"
    try:
        result = evaluate(args.ckpt, args.inputs, args.data_dir, args.tta)
        path = write_report(result, out, ckpt)
    except (DatasetError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    m = result["metrics"]
    print(f"accuracy {100 * m['accuracy']:.2f}%, ECE {100 * m['ece']:.2f}% on {m['images']} images -> {path}")
    return path


if __name__ == "__main__":
    main()
