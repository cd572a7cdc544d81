"""``summary.md`` of a campaign: mean ± std over seeds, the difference to the baseline and whether it is
larger than the noise.

**The tie rule.** Each cell's accuracy is averaged over its seeds; its seed spread is the sample standard
deviation. A cell is compared with its group's baseline by ``delta = mean - mean_baseline`` against the
spread of a difference of two single runs, ``sqrt(std**2 + std_baseline**2)``: a ``delta`` no larger than
that is a **tie**, not a win. With a single seed on either side there is no spread to compare with, and the
verdict says so instead of naming a winner.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_vision.compare.results import read_rows

__all__ = ["CellStats", "aggregate", "compare_to_baseline", "render_tables", "write_report"]

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


def _pct(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" + ("" if std is None else f" ± {100 * std:.2f}")


def _si(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def render_tables(rows: list[dict[str, str]], campaign: Any = None, link_prefix: str = "") -> str:
    """Markdown: one table per group, cells sorted by mean final val accuracy, plus the plots' links.

    ``campaign`` (a :class:`Campaign`, optional) names each group's baseline; ``link_prefix`` is prepended
    to the plot file names (``results/<name>/`` when the tables are embedded in the README).
    """
    stats = aggregate(rows)
    if not stats:
        return "_No finished runs yet._\n"
    groups: list[str] = []
    for s in stats:
        if s.group not in groups:
            groups.append(s.group)
    has_test = any(s.test_mean is not None for s in stats)
    has_tta = any(s.tta_mean is not None for s in stats)
    out: list[str] = []
    for group in groups:
        mine = [s for s in stats if s.group == group]
        ids = [s.cell for s in mine]
        base_id = campaign.baseline_of(group, ids) if campaign is not None else ids[0]
        baseline = next((s for s in mine if s.cell == base_id), mine[0])
        if len(groups) > 1:
            out.append(f"**{group}** (baseline: `{baseline.cell}`)\n")
        header = ["run", "seeds", "val acc (final)", "Δ vs baseline (± spread)", "verdict", "best epoch"]
        header += ["val acc with TTA"] if has_tta else []
        header += ["test acc"] if has_test else []
        header += ["params", "MACs/img", "wall time", "train img/s"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * 3 + ["---"] + ["---:"] * (len(header) - 5)) + "|")
        for s in sorted(mine, key=lambda s: s.mean, reverse=True):
            delta, spread, verdict = compare_to_baseline(s, baseline)
            diff = (
                "-"
                if s is baseline
                else f"{100 * delta:+.2f}" + ("" if spread is None else f" (± {100 * spread:.2f})")
            )
            cells = [f"`{s.cell}`", str(s.n), _pct(s.mean, s.std), diff, verdict, _pct(s.best_mean)]
            cells += [_pct(s.tta_mean, s.tta_std)] if has_tta else []
            cells += [_pct(s.test_mean, s.test_std)] if has_test else []
            speed = "-" if s.images_per_s is None else f"{s.images_per_s:,.0f}"
            cells += [_si(s.params), _si(s.macs), _minutes(s.wall_s) + ("*" if s.contended else ""), speed]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if any(s.contended for s in stats):
        out.append(
            "\\* another job shared the CPU during some of these runs (mean load above the core count), or "
            "part of a run's wall time went unrecorded (its runner was killed): their accuracy is valid, "
            "their wall time and images/s are not clean timings.\n"
        )
    out.append(
        "Mean ± std over seeds of the validation accuracy after the last epoch. A difference no larger "
        "than the spread of a difference of single runs, sqrt(std² + std_baseline²), is a tie.\n"
    )
    if has_tta:
        out.append(
            "Val acc with TTA: the best checkpoint on the same validation split with the config's "
            "test-time augmentation (`train.py test` falls back to that split when there is no test split).\n"
        )
    plots = [("acc_vs_time.png", "accuracy vs wall time"), ("acc_vs_params.png", "accuracy vs parameters"),
             ("curves.png", "validation curves")]  # fmt: skip
    out.append("Plots: " + ", ".join(f"[{title}]({link_prefix}{name})" for name, title in plots) + "\n")
    return "\n".join(out)


def _context(out_dir: Path, rows: list[dict[str, str]]) -> str:
    lines = []
    command = out_dir / "command.txt"
    if command.is_file():
        lines.append(f"Command: `{command.read_text().strip()}`")
    devices = sorted({r["device"] for r in rows if r.get("device")})
    versions = sorted({r["versions"] for r in rows if r.get("versions")})
    if devices:
        lines.append(f"Device: {'; '.join(devices)}")
    if versions:
        lines.append(f"Software: {'; '.join(versions)}")
    return "\n\n".join(lines) + ("\n" if lines else "")


def write_report(out_dir: Path, campaign: Any = None) -> Path:
    """(Re)write ``summary.md`` and the plots of ``out_dir`` from its ``results.csv``."""
    from lit_vision.compare.plots import write_plots

    rows = read_rows(out_dir / "results.csv")
    total = len(campaign.cells()) * len(campaign.seeds) if campaign is not None else None
    progress = f" ({len(rows)} of {total} runs done)" if total and len(rows) < total else ""
    text = (
        f"# Campaign `{out_dir.name}`{progress}\n\n{_context(out_dir, rows)}\n{render_tables(rows, campaign)}"
    )
    (out_dir / "summary.md").write_text(text)
    if rows:
        write_plots(out_dir, rows)
    return out_dir / "summary.md"
