"""Evaluation report of a checkpoint on a labelled split, written beside the checkpoint's run.

    python -m lit_vision.report --ckpt runs/x/version_0/checkpoints/best.ckpt test/ [--out DIR] [--tta]

The split is anything ``predict.py`` reads with labels: an ImageFolder ``test/`` (class folders named like
the checkpoint's classes) or ``cifar10:test`` (``--data-dir``). Files (default: ``<run>/report/``):

* ``report.md``: the key numbers (accuracy, top-k, macro F1, ECE, NLL) and links to everything below;
* ``predictions.csv`` (+ ``predictions.summary.json``): one row per image, as ``predict.py`` writes it (the
  report runs the same loop and writer);
* ``per_class.csv``: precision, recall, F1 and support per class (torchmetrics);
* ``confusion_matrix.png``: rows normalized (each true class sums to 1);
* ``reliability.png``: accuracy vs confidence in 15 bins, with the expected calibration error (Guo et al.,
  2017: ``ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)|``);
* ``mistakes.png``: the most confident wrong predictions, captioned ``true -> predicted (confidence)``;
* ``samples.png`` and ``augmented.png``: images of the split as the model sees them, and after the training
  augmentation recorded in the checkpoint (batched: crop, flip, Cutout, policies; or the per-sample pipeline);
* ``curves.png``: training and validation loss and accuracy per epoch from the run's ``metrics.csv``.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lit_vision.apps import add_checkpoint_arguments
from lit_vision.callbacks.wandb_media import confusion_matrix_figure
from lit_vision.data.augmentation import augmented_views
from lit_vision.data.files import PredictDataset, collect_inputs
from lit_vision.data.sources import DatasetError
from lit_vision.errors import exit_on_error
from lit_vision.models.inference.classifier_loading import load_classifier, read_checkpoint
from lit_vision.models.inference.ensemble import Ensemble
from lit_vision.predict_images import predict_items

__all__ = [
    "evaluate",
    "main",
    "plot_confusion",
    "plot_mistakes",
    "plot_reliability",
    "plot_samples",
    "reliability_bins",
    "write_per_class",
    "write_report",
    "write_summary",
]


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
    ckpts: Sequence[str | Path],
    inputs: Sequence[str],
    data_dir: str | Path | None = None,
    tta: bool = False,
    trusted: bool = False,
    csv_path: str | Path = "predictions.csv",
) -> dict[str, Any]:
    """Probabilities, targets and metrics of a labelled split, through predict.py's loop and writer (the
    per-image CSV goes to ``csv_path``); images are decoded again only for the figures that show them.
    ``trusted``: allow checkpoints with pickled objects (see
    ``lit_vision.models.inference.classifier_loading``)."""
    ensemble = Ensemble([load_classifier(c, trusted) for c in ckpts], tta=tta).eval()
    items = collect_inputs(inputs, ensemble.class_names, None if data_dir is None else Path(data_dir))
    if any(it.target is None for it in items):
        raise DatasetError("The report needs labelled inputs: an ImageFolder test/ tree or cifar10:test.")
    _, probs = predict_items(ensemble, items, csv_path, num_workers=0, keep_probs=True)
    assert probs is not None
    with open(csv_path, newline="") as f:
        read = [not row["error"] for row in csv.DictReader(f)]  # input order, like probs
    index = torch.tensor([i for i, ok in enumerate(read) if ok], dtype=torch.long)
    failed = [items[i].path for i, ok in enumerate(read) if not ok]
    p = probs[index]
    y = torch.tensor([items[int(i)].target for i in index], dtype=torch.long)
    dataset = PredictDataset(items, ensemble.input_size)
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
        # uint8 (len(positions), 3, S, S) images of the given positions of probs/targets, decoded again
        "images_at": lambda positions: torch.stack([dataset[int(index[i])][0] for i in positions]),
        "metrics": metrics,
    }


def _grid(images: Tensor, captions: list[str], path: Path, cols: int = 8) -> None:
    plt = _pyplot()

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
    plt = _pyplot()

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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_per_class(metrics: dict[str, Any], names: list[str], path: Path) -> None:
    """``per_class.csv``: precision, recall, F1 and support per class."""
    pc = metrics["per_class"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for i, name in enumerate(names):
            scores = (f"{float(pc[k][i]):.4f}" for k in ("precision", "recall", "f1"))
            writer.writerow([name, *scores, int(pc["support"][i])])


def plot_confusion(metrics: dict[str, Any], names: list[str], path: Path) -> None:
    """``confusion_matrix.png``, rows normalized (torchmetrics' plot, as W&B gets it)."""
    plt = _pyplot()
    fig = confusion_matrix_figure(metrics["confusion"], names)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(probs: Tensor, targets: Tensor, ece: float, path: Path) -> None:
    """``reliability.png``: accuracy per confidence bin against the diagonal, titled with the ECE."""
    plt = _pyplot()
    bins = reliability_bins(probs, targets)
    fig, ax = plt.subplots(figsize=(4, 4))
    centers = (bins["edges"][1:] + bins["edges"][:-1]) / 2
    filled = bins["count"] > 0
    ax.bar(centers[filled], bins["accuracy"][filled], width=1 / 15, edgecolor="black", label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {100 * ece:.2f}%")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mistakes(
    probs: Tensor,
    targets: Tensor,
    images_at: Callable[[Tensor], Tensor],
    names: list[str],
    path: Path,
    n: int,
) -> bool:
    """``mistakes.png``: the ``n`` most confident wrong predictions; ``False`` when there are none."""
    conf, pred = probs.max(-1)
    wrong = (pred != targets).nonzero().flatten()
    worst = wrong[conf[wrong].argsort(descending=True)][:n]
    if not len(worst):
        return False
    captions = [f"{names[int(targets[i])]} -> {names[int(pred[i])]} ({float(conf[i]):.2f})" for i in worst]
    _grid(images_at(worst), captions, path)
    return True


def plot_samples(
    images_at: Callable[[Tensor], Tensor],
    targets: Tensor,
    names: list[str],
    datamodule_hparams: dict[str, Any],
    mean: Tensor,
    std: Tensor,
    out: Path,
) -> None:
    """``samples.png`` (the first 32 images as the model sees them) and ``augmented.png`` (the same after the
    training augmentation the checkpoint recorded, batched or per-sample: ``augmented_views``)."""
    first = torch.arange(min(32, len(targets)))
    captions = [names[int(targets[i])] for i in first]
    images = images_at(first)
    _grid(images, captions, out / "samples.png")
    _grid(augmented_views(images, datamodule_hparams, mean, std), captions, out / "augmented.png")


def write_summary(metrics: dict[str, Any], ckpt: Path, has_curves: bool, path: Path) -> None:
    """``report.md``: the key numbers and links to every other file."""
    m = metrics
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
        "Files: [predictions.csv](predictions.csv), [per_class.csv](per_class.csv), "
        "![confusion matrix](confusion_matrix.png), "
        "![reliability](reliability.png), ![mistakes](mistakes.png), ![samples](samples.png), "
        "![augmented](augmented.png)"
        + (", ![curves](curves.png)" if has_curves else " (no metrics.csv found)"),
    ]
    path.write_text("\n".join(lines) + "\n")


def write_report(
    result: dict[str, Any], out: Path, ckpt: Path, n_mistakes: int = 32, trusted: bool = False
) -> Path:
    """Write every file of the module docstring into ``out``; return the markdown summary's path."""
    out.mkdir(parents=True, exist_ok=True)
    names = result["ensemble"].class_names
    m = result["metrics"]
    probs, y, images_at = result["probs"], result["targets"], result["images_at"]
    write_per_class(m, names, out / "per_class.csv")
    plot_confusion(m, names, out / "confusion_matrix.png")
    plot_reliability(probs, y, m["ece"], out / "reliability.png")
    plot_mistakes(probs, y, images_at, names, out / "mistakes.png", n_mistakes)
    saved = read_checkpoint(ckpt, trusted).get("datamodule_hyper_parameters", {})
    member = result["ensemble"].members[0]  # the normalization Cutout and erasing fill with
    plot_samples(images_at, y, names, saved, member.input_mean, member.input_std, out)
    has_curves = _training_curves(ckpt.resolve().parent.parent / "metrics.csv", out / "curves.png")
    path = out / "report.md"
    write_summary(m, ckpt, has_curves, path)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m lit_vision.report", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="a labelled split: ImageFolder test/ or cifar10:test")
    add_checkpoint_arguments(parser, ensemble=True)
    parser.add_argument("--out", default=None, help="output folder (default: <run>/report)")
    parser.add_argument("--data-dir", default=None, help="dataset folder for cifar10:test etc.")
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args(argv)
    ckpt = Path(args.ckpt[0])
    run_dir = (
        ckpt.resolve().parent.parent if ckpt.resolve().parent.name == "checkpoints" else ckpt.resolve().parent
    )
    out = Path(args.out) if args.out else run_dir / "report"
    with exit_on_error(DatasetError, ValueError, FileNotFoundError):
        out.mkdir(parents=True, exist_ok=True)
        csv_path = out / "predictions.csv"
        result = evaluate(args.ckpt, args.inputs, args.data_dir, args.tta, args.trust_checkpoint, csv_path)
        path = write_report(result, out, ckpt, trusted=args.trust_checkpoint)
    m = result["metrics"]
    print(f"accuracy {100 * m['accuracy']:.2f}%, ECE {100 * m['ece']:.2f}% on {m['images']} images -> {path}")
    return path


if __name__ == "__main__":
    main()
