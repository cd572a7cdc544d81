"""A campaign's cells over their seeds: mean ± std, and the tie rule that compares a cell with its baseline.

**The tie rule.** Each cell's accuracy is averaged over its seeds; its seed spread is the sample standard
deviation. A cell is compared with its group's baseline by ``delta = mean - mean_baseline`` against the
spread of a difference of two single runs, ``sqrt(std**2 + std_baseline**2)``: a ``delta`` no larger than
that is a **tie**, not a win. With a single seed on either side there is no spread to compare with, and the
verdict says so instead of naming a winner.

``summary`` (tables) and ``plots`` (figures) both read these; neither imports the other for it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["METRIC", "CellStats", "aggregate", "compare_to_baseline"]

METRIC = "val_acc_final"  # ranked on accuracy at the end of the schedule: the best epoch is chosen on val


@dataclass
class CellStats:
    group: str
    cell: str
    n: int
    mean: float
    std: float | None
    best_mean: float
    test_mean: float | None
    test_std: float | None
    tta_mean: float | None  # the best checkpoint on the validation split with the config's TTA views
    tta_std: float | None
    params: int | None
    macs: int | None
    wall_s: float
    images_per_s: float | None
    contended: bool  # another job shared the CPU while some of its seeds ran, or wall time was lost


def _floats(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def aggregate(rows: list[dict[str, str]]) -> list[CellStats]:
    """One ``CellStats`` per (group, cell), in first-seen order."""
    keys: list[tuple[str, str]] = []
    for row in rows:
        if (row["group"], row["cell"]) not in keys:
            keys.append((row["group"], row["cell"]))
    stats = []
    for group, cell in keys:
        mine = [r for r in rows if (r["group"], r["cell"]) == (group, cell)]
        mean, std = _mean_std(_floats(mine, METRIC))
        test_mean, test_std = _mean_std(_floats(mine, "test_acc"))
        tta_mean, tta_std = _mean_std(_floats(mine, "val_acc_tta"))
        speeds = _floats(mine, "train_images_per_s")
        params, macs = _floats(mine, "params"), _floats(mine, "macs")
        contended = any(
            float(r["load_avg"]) > float(r["cpu_count"]) + 0.5
            for r in mine
            if r.get("load_avg") and r.get("cpu_count") and r.get("device", "").endswith("cores)")
        ) or any(  # a run's recorded wall time is shorter than its training: an attempt went unrecorded
            float(r["wall_s"]) < float(r["train_s"]) for r in mine if r.get("wall_s") and r.get("train_s")
        )
        assert mean is not None
        stats.append(
            CellStats(
                group=group,
                cell=cell,
                n=len(mine),
                mean=mean,
                std=std,
                best_mean=statistics.fmean(_floats(mine, "val_acc_best")),
                test_mean=test_mean,
                test_std=test_std,
                tta_mean=tta_mean,
                tta_std=tta_std,
                params=int(params[0]) if params else None,
                macs=int(macs[0]) if macs else None,
                wall_s=statistics.fmean(_floats(mine, "wall_s")),
                images_per_s=statistics.fmean(speeds) if speeds else None,
                contended=contended,
            )
        )
    return stats


def compare_to_baseline(cell: CellStats, baseline: CellStats) -> tuple[float, float | None, str]:
    """``(delta, spread, verdict)``; verdict is ``baseline``, ``better``, ``worse``, ``tie`` or
    ``no spread (1 seed)``."""
    delta = cell.mean - baseline.mean
    if cell is baseline:
        return 0.0, None, "baseline"
    if cell.std is None or baseline.std is None:
        return delta, None, "no spread (1 seed)"
    spread = math.sqrt(cell.std**2 + baseline.std**2)
    if abs(delta) <= spread:
        return delta, spread, "tie"
    return delta, spread, "better" if delta > 0 else "worse"
