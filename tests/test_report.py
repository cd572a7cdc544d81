"""Evaluation report: every file written, and its numbers equal to independent computations."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers import copy_run
from torchmetrics.classification import MulticlassCalibrationError

from lit_vision.predict_images import main as predict_main
from lit_vision.report import main, reliability_bins


def test_reliability_bins_give_torchmetrics_ece() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(500, 4, generator=g).mul(2).softmax(-1)
    targets = torch.randint(0, 4, (500,), generator=g)
    bins = reliability_bins(probs, targets, n_bins=15)
    assert int(bins["count"].sum()) == 500
    ece = float((bins["count"] / 500 * (bins["accuracy"] - bins["confidence"]).abs()).sum())
    expected = float(MulticlassCalibrationError(4, n_bins=15, norm="l1")(probs, targets))
    assert ece == pytest.approx(expected, abs=1e-6)


def test_report_files_and_numbers(tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tiny_folder
    ckpt = copy_run(tiny_checkpoint, tmp_path / "run")  # the report is written into the run's folder
    report = main(["--ckpt", str(ckpt), str(data / "test")])
    out = report.parent
    assert out == ckpt.parent.parent / "report"
    for name in (
        "per_class.csv",
        "confusion_matrix.png",
        "reliability.png",
        "samples.png",
        "augmented.png",
        "curves.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name

    # per-class numbers against the predictions predict.py writes for the same split
    summary = predict_main(["--ckpt", str(ckpt), str(data / "test"), "--out", str(tmp_path / "p.csv")])
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out / "per_class.csv", newline="") as f:
        per_class = {r["class"]: r for r in csv.DictReader(f)}
    for name, r in per_class.items():
        tp = sum(x["target"] == name and x["prediction"] == name for x in rows)
        predicted = sum(x["prediction"] == name for x in rows)
        actual = sum(x["target"] == name for x in rows)
        assert int(r["support"]) == actual == 6
        assert float(r["recall"]) == pytest.approx(tp / actual, abs=1e-4)
        assert float(r["precision"]) == pytest.approx(tp / predicted if predicted else 0.0, abs=1e-4)
    text = report.read_text()
    assert f"| accuracy | {100 * summary['accuracy']:.2f}% |" in text
    if summary["accuracy"] < 1:
        assert (out / "mistakes.png").is_file()


def test_report_needs_labels(tiny_folder: Path, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    data = tiny_folder
    ckpt = copy_run(tiny_checkpoint, tmp_path / "run")  # main makes <run>/report before it reads the inputs
    with pytest.raises(SystemExit):
        main(["--ckpt", str(ckpt), str(data / "test" / "class_00")])  # a plain folder: no labels
    assert "needs labelled inputs" in capsys.readouterr().err
