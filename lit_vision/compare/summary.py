"""``summary.md`` of a campaign: mean ± std over seeds, the difference to the baseline and whether it is
larger than the noise (the tie rule: :mod:`lit_vision.compare.stats`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_vision.compare.plots import write_plots
from lit_vision.compare.results import read_rows
from lit_vision.compare.stats import aggregate, compare_to_baseline

__all__ = ["render_tables", "write_campaign_summary"]


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
    to the plot file names (``../results/<name>/`` when the tables are embedded in docs/results.md).
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


def write_campaign_summary(out_dir: Path, campaign: Any = None) -> Path:
    """(Re)write ``summary.md`` and the plots of ``out_dir`` from its ``results.csv``."""

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
