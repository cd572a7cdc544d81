"""python -m lit_vision.lr_find: the suggestion rule, and a sweep through the CLI on tiny data that keeps
the optimizer's group ratios and answers in the config's units."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, data_args

from lit_vision.lr_find import main, suggest


def test_suggestion_is_the_steepest_descent_of_the_smoothed_loss() -> None:
    lrs = list(np.geomspace(1e-5, 10, 61))
    # falls fastest (per unit of log10 lr) at lr = 1e-2, then blows up past 1
    smoothed = [2 - math.tanh(2 * (math.log10(lr) + 2)) + (5 * (lr - 1) if lr > 1 else 0) for lr in lrs]
    assert suggest(lrs, smoothed) == pytest.approx(1e-2, rel=0.13)  # within one grid step (10^(6/60))
    with pytest.raises(ValueError, match="Too few points"):
        suggest(lrs[:6], smoothed[:6])


def test_sweep_through_the_cli(tmp_path: Path, request: pytest.FixtureRequest, capsys) -> None:
    config = "configs/cifar10_compact.yaml"
    sweep = main(
        [
            "--steps=12",
            "--min-lr=1e-4",
            "--max-lr=1.0",
            f"--out={tmp_path}",
            f"--config={ROOT / config}",
            *data_args(config, request),
            "--model.norm_bias_lr_scale=4",  # a group at 4x the rate: the sweep must keep the ratio
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert sweep.config_lr == 0.2  # the config's optimizer lr: the units of the sweep and the answer
    assert len(sweep.lrs) == 12 or sweep.smoothed[-1] > 4 * min(sweep.smoothed)  # all steps, or diverged
    np.testing.assert_allclose(sweep.lrs, np.geomspace(1e-4, 1.0, 12)[: len(sweep.lrs)], rtol=1e-6)
    assert sweep.group_lrs[-1] / sweep.group_lrs[0] == pytest.approx(4.0)
    assert 1e-4 <= sweep.suggestion <= 1.0
    with open(tmp_path / "lr_find.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(sweep.lrs) and float(rows[0]["lr"]) == pytest.approx(1e-4)
    assert (tmp_path / "lr_find.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert f"--model.optimizer.init_args.lr {sweep.suggestion:.4g}" in out
