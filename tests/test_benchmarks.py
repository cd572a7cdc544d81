"""The benchmark scripts run end to end and print their figures (tiny settings: the figures themselves are
measured by hand, docs/results.md; a timed assertion would be noise on a shared machine)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REAL_CIFAR10, ROOT, make_imagefolder

NUMBER = r"[0-9][0-9,.]*"


def bench(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_zoo_table(tmp_path: Path) -> None:
    out = bench("zoo.py", "--pattern", "compact*", "--steps", "1", "--warmup", "0", "--batch-size", "8")
    assert "CPU" in out.splitlines()[0]
    assert re.search(rf"^\| `compact_cifar` \| {NUMBER}M \| {NUMBER}M \| {NUMBER} \|$", out, re.M)


@pytest.mark.parametrize("script", ["fit_overhead.py", "callback_overhead.py"])
def test_training_overhead_scripts(script: str, tmp_path: Path) -> None:
    common = ["--synthetic", "--log-dir", str(tmp_path), "--batch-size", "16", "--rounds", "1"]
    out = bench(
        script, *common, "--steps", "3", "--warmup", "1", *(["--tta-batch", "8"] * (script[0] == "c"))
    )
    if script == "fit_overhead.py":
        assert re.search(rf"median paired ratio lightning/plain = {NUMBER}", out)
    else:
        for name in ("ema", "fgsm", "mixing"):
            assert re.search(rf"{name}: {NUMBER} ms/step vs off {NUMBER} -> median ratio {NUMBER}x", out)
        assert re.search(rf"tta: 6 views {NUMBER} ms vs one forward {NUMBER} ms on 8 images", out)


def test_augment_throughput(tmp_path: Path) -> None:
    args = [
        "--synthetic",
        "--log-dir",
        str(tmp_path),
        "--batch-size",
        "32",
        "--batches",
        "2",
        "--rounds",
        "1",
    ]
    out = bench("augment_throughput.py", *args)
    for name in ("crop+flip", "+randaugment (2 ops, magnitude 9)", "+trivialaugment", "+random erasing 0.25"):
        assert re.search(rf"^\| {re.escape(name)} \| {NUMBER} \| {NUMBER}x \|$", out, re.M), name


def test_predict_throughput(tmp_path: Path) -> None:
    images = make_imagefolder(tmp_path / "data", 2, n_train=8, n_test=None) / "train" / "class_00"
    out = bench("predict_throughput.py", "--images", str(images), "--rounds", "1", "--workers", "0")
    assert re.search(rf"round 0: plain +{NUMBER} img/s +predict.py +{NUMBER} img/s", out)
    assert re.search(rf"median ratio predict.py / plain loop: {NUMBER}x", out)


def test_adaptive_tta(tiny_checkpoint: Path, tiny_folder: Path) -> None:
    args = [
        "--ckpt",
        str(tiny_checkpoint),
        "--data-dir",
        str(tiny_folder),
        "--thresholds",
        "0.5",
        "--rounds",
        "1",
    ]
    out = bench("adaptive_tta.py", *args, "--batch-size", "8")
    assert "12 held-out images" in out
    for name in ("no TTA", "full TTA \\(6 views\\)", "adaptive, confidence < 0.5"):
        assert re.search(rf"^\| {name} \| {NUMBER}% \| {NUMBER}% \| {NUMBER} \|$", out, re.M), name
    assert re.search(r"^\| full TTA \(6 views\) \| [0-9.]+% \| 100% \|", out, re.M)


@pytest.mark.slow  # two conversions and five short fits in child processes: about 2 minutes
def test_streaming_speed_and_memory(tmp_path: Path) -> None:
    # enough steps for the config's OneCycleLR (its warmup must span more than one step)
    data = make_imagefolder(tmp_path / "data", 2, n_train=20, n_test=None)
    common = ["--work-dir", str(tmp_path / "work"), "--val-size", "8", "--batch-size", "4"]
    out = bench("streaming.py", "speed", "--data-dir", str(data), *common, "--rounds", "1")
    for backend in ("memory", "streaming"):
        assert re.search(rf"^\| {backend} \| {NUMBER} \| {NUMBER} \|$", out, re.M), backend
    out = bench("streaming.py", "memory", *common, "--images", "40", "--size", "32", "--steps", "6")
    rows = (
        "streaming",
        r"memory, first run \(decodes, writes its cache\)",
        r"memory, later runs \(load the cache\)",
    )
    for row in rows:
        assert re.search(rf"^\| {row} \| {NUMBER} GiB \| {NUMBER} s \|$", out, re.M), row


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_cuda_asked_for_without_one_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "zoo.py"), "--device", "cuda"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode != 0 and "--device cuda: torch sees no CUDA GPU here" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_CIFAR10 / "train").is_dir(), reason="needs the real CIFAR-10 JPEGs")
def test_speedrun_overhead(tmp_path: Path) -> None:
    args = ["--data-dir", str(REAL_CIFAR10), "--log-dir", str(tmp_path)]
    out = bench("speedrun_overhead.py", *args, "--steps", "2", "--warmup", "1", "--rounds", "1")
    assert re.search(rf"median paired ratio fit/plain = {NUMBER}", out)


def test_host_overhead() -> None:
    out = bench(
        "host_overhead.py", "--variants", "default", "speedrun", "trick:fgsm",
        "--steps", "4", "--warmup", "1", "--rounds", "1", "--split",
    )  # fmt: skip
    for variant in ("default", "speedrun", "trick:fgsm"):
        assert re.search(
            rf"^{variant} +-?{NUMBER} +-?{NUMBER} +-?{NUMBER} \(-?{NUMBER}\.\.-?{NUMBER}\)$", out, re.M
        )
    for part in (
        "training_step",
        "backward",
        "optimizer",
        "data",
        "callback EpochThroughput",
        "Lightning loop",
    ):
        assert re.search(rf"^    {part} .* -?{NUMBER} +-?{NUMBER} +-?{NUMBER}$", out, re.M), part
