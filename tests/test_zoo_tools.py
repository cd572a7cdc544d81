"""Tools around the zoo: receptive-field report and ``python -m lit_vision.models``."""

from __future__ import annotations

import subprocess
import sys

import pytest
from torch import nn

from lit_vision.models import create_backbone, list_backbones
from lit_vision.models.__main__ import main
from lit_vision.models.inspection.receptive_field import format_receptive_field, receptive_field


def test_receptive_field_of_the_compact_cnn() -> None:
    rows = receptive_field(create_backbone("compact_cifar", num_classes=10))
    # By hand from the design: 3x3 (3), 3x3 (5), 3x3/2 (7, jump 2), dw 3x3 (11), dw 3x3/2 (15, jump 4),
    # dw 3x3/2 (23, jump 8), dw 3x3 dilation 2 (effective 5x5: 23 + 4 * 8 = 55); 1x1 convs add nothing.
    assert [r.receptive_field for r in rows if r.kernel > 1] == [3, 5, 7, 11, 15, 23, 55]
    assert rows[-1].receptive_field == 55 and rows[-1].jump == 8 and rows[-1].out_size == 4
    dilated = [r for r in rows if r.dilation == 2]
    assert len(dilated) == 1 and dilated[0].kernel == 3
    assert sum(r.stride == 2 for r in rows) == 3


def test_receptive_field_with_pooling_and_padding() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 5, padding=0), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, stride=2, padding=1)
    )
    rows = receptive_field(net, input_size=32)
    assert [(r.receptive_field, r.jump) for r in rows] == [(5, 1), (6, 2), (10, 4)]
    # centres: 0.5 + 2 = 2.5 (unpadded 5x5), + 0.5 * 1 = 3.0 (2x2 pool), + (1 - 1) * 2 = 3.0
    assert [r.start for r in rows] == [2.5, 3.0, 3.0]
    assert [r.out_size for r in rows] == [28, 14, 7]


def test_receptive_field_warns_on_branches() -> None:
    with pytest.warns(UserWarning, match="not a plain stack"):
        receptive_field(create_backbone("resnet18_cifar", num_classes=10))


def test_format_receptive_field() -> None:
    text = format_receptive_field(receptive_field(create_backbone("cnn", num_classes=10)))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "type", "k", "s", "d", "p", "rf", "jump", "start", "out"]
    assert lines[-1].split()[6:8] == ["36", "8"]  # (3, 5, pool 6, 10, 14, pool 16, 24, 32, pool 36)


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    main(["list"])
    out = capsys.readouterr().out
    for name in list_backbones():
        assert name in out
    compact = next(line for line in out.splitlines() if line.startswith("compact_cifar"))
    assert "84,322" in compact and "M" in compact.split()[2]  # MACs in millions for a 32x32 image


def test_cli_summary_and_rf(capsys: pytest.CaptureFixture[str]) -> None:
    main(["summary", "compact_cifar", "--depth", "3"])
    out = capsys.readouterr().out
    assert "In sizes" in out and "Out sizes" in out and "84.3 K" in out
    main(["rf", "compact_cifar"])
    assert "55" in capsys.readouterr().out.splitlines()[-1].split()


def test_cli_unknown_backbone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        main(["summary", "resnet18_cifr"])
    assert err.value.code == 2
    assert "Did you mean: resnet18_cifar" in capsys.readouterr().err


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lit_vision.models", "list", "efficientnet*"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[2:5]] == [
        "efficientnet_b0",
        "efficientnet_b1",
        "efficientnet_tiny",
    ]
