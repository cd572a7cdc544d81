"""What a finished cell leaves in ``results/<campaign>/``: one ``results.csv`` row per (cell, seed) and its
per-epoch curve in ``curves/<cell>-s<seed>.csv``.

Both are read from the cell's ordinary run directories (``metrics.csv`` of every ``version_*`` the cell
needed: a resumed run logs into a new one) and its best checkpoint, so they survive the run directories
being deleted, and a campaign stopped in one session continues in the next from the committed files.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Any

__all__ = [
    "CURVE_FIELDS",
    "RESULT_FIELDS",
    "append_row",
    "cell_metrics",
    "device_name",
    "read_rows",
    "software_versions",
    "write_curve",
]

RESULT_FIELDS = [
    "group", "cell", "seed", "val_acc_final", "val_acc_best", "test_acc", "val_acc_tta", "epochs", "steps",
    "params", "macs", "wall_s", "train_s", "train_images_per_s", "peak_rss_mb", "gpu_mem_peak_gb", "load_avg",
    "cpu_count", "device", "versions", "configs", "overrides", "run_dir",
]  # fmt: skip
CURVE_FIELDS = ["epoch", "step", "val/acc", "val/loss", "train/loss_epoch", "train/acc", "perf/train_s"]


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a ``results.csv`` (none if it does not exist yet)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one row, writing the header first for a new file; flushed so a stop loses nothing.

    A file written with an older column list is rewritten with today's first (its rows keep their values,
    new columns stay empty), so a campaign started before a column was added can go on appending.
    """
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != RESULT_FIELDS:
            _rewrite(path, read_rows(path))
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(row.get(k)) for k in RESULT_FIELDS})
        f.flush()
        os.fsync(f.fileno())


def _rewrite(path: Path, rows: list[dict[str, str]]) -> None:
    """``rows`` under today's header, through a temporary file so a stop leaves the old or the new file."""
    unknown = sorted({k for r in rows for k in r} - set(RESULT_FIELDS))
    if unknown:
        raise ValueError(f"{path} has columns unknown to this lit_vision ({unknown}): a newer one wrote it.")
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _float(value: str | None) -> float | None:
    if value in (None, ""):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _version_key(path: Path) -> int:
    suffix = path.name.removeprefix("version_")
    return int(suffix) if suffix.isdigit() else -1


def cell_metrics(run_root: Path) -> dict[str, Any]:
    """Merge the ``metrics.csv`` of every ``version_*`` under ``run_root`` (a resumed run writes a new
    version; a later version's value for the same epoch wins) into per-epoch records and summaries."""
    versions = sorted((p for p in run_root.glob("version_*") if p.is_dir()), key=_version_key)
    epochs: dict[int, dict[str, float]] = {}
    for version in versions:
        metrics = version / "metrics.csv"
        if not metrics.is_file():
            continue
        with open(metrics, newline="") as f:
            for raw in csv.DictReader(f):
                epoch = _float(raw.get("epoch"))
                if epoch is None:
                    continue
                record = epochs.setdefault(int(epoch), {})
                for key, value in raw.items():
                    number = _float(value)
                    if number is not None and key != "epoch":
                        record[key] = number
    curve = [{"epoch": e, **epochs[e]} for e in sorted(epochs) if "val/acc" in epochs[e]]
    speeds = [epochs[e]["perf/train_images_per_s"] for e in epochs if "perf/train_images_per_s" in epochs[e]]
    train_s = [epochs[e]["perf/train_s"] for e in epochs if "perf/train_s" in epochs[e]]
    gpu = [epochs[e]["perf/gpu_mem_peak_gb"] for e in epochs if "perf/gpu_mem_peak_gb" in epochs[e]]
    test = [epochs[e]["test/acc"] for e in epochs if "test/acc" in epochs[e]]
    return {
        "curve": curve,
        "val_acc_final": curve[-1]["val/acc"] if curve else None,
        "val_acc_best": max(r["val/acc"] for r in curve) if curve else None,
        "epochs": len(curve),
        "steps": int(max((r.get("step", 0) for r in curve), default=0)) + 1 if curve else 0,
        # the first epoch pays one-off costs (kernel selection, allocator growth): the median is the pace
        "train_images_per_s": statistics.median(speeds) if speeds else None,
        "train_s": max(train_s) if train_s else None,
        "gpu_mem_peak_gb": max(gpu) if gpu else None,
        "test_acc": test[-1] if test else None,
    }


def write_curve(path: Path, curve: list[dict[str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for record in curve:
            writer.writerow({k: _fmt(record.get(k)) for k in CURVE_FIELDS})


def device_name(gpu_index: int | None = None) -> str:
    """The GPU's name, or the CPU model and core count."""
    if gpu_index is not None:
        import torch

        return torch.cuda.get_device_name(gpu_index)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} cores)"


def software_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for package in ("torch", "lightning", "lit-vision"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            continue
    return ", ".join(parts)
