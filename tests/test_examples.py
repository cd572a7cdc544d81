"""The scripts in examples/ run as a user runs them (a subprocess from the repository root) on tiny data, and
write and print what their docstrings promise."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers import ROOT, run_python


def run_example(name: str, *args: str | Path) -> str:
    """stdout + stderr of ``python examples/<name> ARGS`` (failing the test, with the output, on an error)."""
    code, output = run_python(ROOT / "examples" / name, *args)
    assert code == 0, output
    assert "Traceback" not in output, output
    return output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """examples/train_from_python.py on data it generates itself (its --data-dir does not exist yet)."""
    root = tmp_path_factory.mktemp("train_from_python")
    data, out = root / "data", root / "out"
    output = run_example("train_from_python.py", "--data-dir", data, "--out", out, "--steps", "3")
    assert f"wrote a tiny generated image folder to {data}" in output
    assert "val/acc" in output and "after 3 steps" in output
    return data, out


def test_train_from_python_writes_a_checkpoint_and_metrics(trained: tuple[Path, Path]) -> None:
    from lit_vision.models.inference.classifier_loading import load_classifier

    data, out = trained
    assert sorted(p.name for p in (data / "train").iterdir()) == ["class_00", "class_01", "class_02"]
    model = load_classifier(out / "model.ckpt")  # loads weights-only: no pickled objects in it
    assert model.class_names == ["class_00", "class_01", "class_02"] and model.input_size == 32
    assert list(out.glob("train_from_python/version_*/metrics.csv"))


def test_predict_from_python_reads_that_checkpoint(trained: tuple[Path, Path]) -> None:
    data, out = trained
    csv_path = out / "predictions.csv"
    args = ["--ckpt", out / "model.ckpt", "--images", data / "test", "--limit", "4", "--out", csv_path]
    output = run_example("predict_from_python.py", *args)
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 4 and f"wrote {csv_path}" in output
    for row in rows:
        assert Path(row["path"]).is_file() and row["prediction"] in {"class_00", "class_01", "class_02"}
        assert 0.0 < float(row["confidence"]) <= 1.0
        assert f"{row['path']}: {row['prediction']}" in output


def test_custom_backbone_by_class_path_trains_and_rebuilds(tiny_folder: Path, tmp_path: Path) -> None:
    output = run_example("custom_backbone.py", "--data-dir", tiny_folder, "--out", tmp_path, "--steps", "2")
    assert "rebuilt TinyNet from" in output
    last = next(tmp_path.glob("*/version_*/checkpoints/last.ckpt"))
    config = next(tmp_path.glob("*/version_*/config.yaml")).read_text()
    assert "class_path: custom_backbone.TinyNet" in config and str(last) in output
