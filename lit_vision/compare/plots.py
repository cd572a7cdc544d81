"""The campaign's figures: accuracy vs wall time, accuracy vs parameters, validation curves overlaid.

Points are per-cell means with the seed standard deviation as error bars; curves are the per-epoch mean over
seeds (from ``curves/<cell>-s<seed>.csv``, so they are drawn from committed files alone).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers or in CI
import matplotlib.pyplot as plt

from lit_vision.compare.stats import aggregate

__all__ = ["write_plots"]


def _scatter(out: Path, rows: list[dict[str, str]], x: str, xlabel: str, logx: bool) -> None:
    stats = aggregate(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for s in stats:
        value = s.wall_s / 60 if x == "time" else s.params
        if value is None:
            continue
        ax.errorbar(value, 100 * s.mean, yerr=None if s.std is None else 100 * s.std, fmt="o", capsize=3)
        ax.annotate(s.cell, (value, 100 * s.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val accuracy after the last epoch (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _curves(out_dir: Path, rows: list[dict[str, str]]) -> None:
    per_cell: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        path = out_dir / "curves" / f"{row['cell']}-s{row['seed']}.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            for record in csv.DictReader(f):
                if record.get("val/acc"):
                    per_cell[row["cell"]][int(float(record["epoch"]))].append(float(record["val/acc"]))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for cell, epochs in per_cell.items():
        xs = sorted(epochs)
        ax.plot(
            [e + 1 for e in xs], [100 * sum(epochs[e]) / len(epochs[e]) for e in xs], marker=".", label=cell
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy (%), mean over seeds")
    ax.grid(alpha=0.3)
    if per_cell:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png")
    plt.close(fig)


def write_plots(out_dir: Path, rows: list[dict[str, str]]) -> list[Path]:
    """Write ``acc_vs_time.png``, ``acc_vs_params.png`` and ``curves.png`` into ``out_dir``."""
    _scatter(out_dir / "acc_vs_time.png", rows, "time", "wall time per run (min)", logx=False)
    _scatter(out_dir / "acc_vs_params.png", rows, "params", "parameters", logx=True)
    _curves(out_dir, rows)
    return [out_dir / n for n in ("acc_vs_time.png", "acc_vs_params.png", "curves.png")]
