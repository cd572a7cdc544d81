"""A short training run on the real CIFAR-10 JPEGs in ../shared (skipped where they are absent).

Set LIT_VISION_CIFAR10_DIR to use another ImageFolder copy of CIFAR-10.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REAL_CIFAR10, ROOT

from lit_vision.cli import main

REAL = REAL_CIFAR10


def subset(dst: Path, per_class: int) -> Path:
    """Symlink the first ``per_class`` images of each class into an ImageFolder tree."""
    for class_dir in sorted((REAL / "train").iterdir()):
        out = dst / "train" / class_dir.name
        out.mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:per_class]:
            (out / f.name).symlink_to(f)
    return dst


@pytest.mark.skipif(not (REAL / "train").is_dir(), reason=f"no real CIFAR-10 at {REAL}")
@pytest.mark.parametrize("backend", ["memory", "streaming"])
def test_short_real_cifar10_run_beats_chance(tmp_path: Path, backend: str) -> None:
    """Both back-ends learn from real images (a streaming run once trained at chance: its shards were stored
    class by class, so every batch held one class)."""
    data = subset(tmp_path / "cifar10", per_class=300)  # 3,000 images: 2,500 train, 500 held out
    if backend == "streaming":
        from lit_vision.data.shards import convert

        convert(str(data), tmp_path / "shards", val_size=500, workers=1)
        data = tmp_path / "shards"
    cli = main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/cifar10_compact.yaml"),
            f"--data.data_dir={data}",
            f"--data.backend={backend}",
            "--data.val_size=500",
            "--trainer.max_epochs=4",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        ]
    )
    val_acc = float(cli.trainer.callback_metrics["val/acc"])
    assert val_acc > 0.3, f"{backend}: val/acc {val_acc:.3f} on 500 held-out real images (chance: 0.1)"
