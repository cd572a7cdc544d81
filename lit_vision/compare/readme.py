"""Keep the README's result tables true: regenerate what stands between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` from ``results/NAME/``.

The generated block is a function of the committed result files alone (no dates, no machine state), so
running the command twice changes nothing, and a diff of README.md shows exactly which numbers moved.
"""

from __future__ import annotations

import re
from pathlib import Path

from lit_vision.compare.campaign import Campaign, CampaignError
from lit_vision.compare.results import read_rows
from lit_vision.compare.summary import render_tables

__all__ = ["ReadmeError", "render_block", "update_readme"]

# A marker is a line of its own: the same text inside a sentence or a code span is documentation.
_OPEN = re.compile(r"^<!-- results:([A-Za-z0-9_.-]+) -->[ \t]*$", re.MULTILINE)


def _marker_lines(text: str, tag: str) -> list[int]:
    """Start offsets of the lines that hold exactly ``tag``."""
    return [m.start() for m in re.finditer(rf"^{re.escape(tag)}[ \t]*$", text, re.MULTILINE)]


class ReadmeError(ValueError):
    """A marker without its partner, or a marker whose campaign has no results."""


def render_block(results_dir: Path, name: str) -> str:
    out = results_dir / name
    rows = read_rows(out / "results.csv")
    if not rows:
        raise ReadmeError(f"No results for campaign {name!r}: {out / 'results.csv'} is missing or empty.")
    campaign = None
    if (out / "campaign.yaml").is_file():
        try:
            campaign = Campaign.from_file(out / "campaign.yaml")
        except CampaignError:  # configs renamed since: the tables still render, with default baselines
            campaign = None
    lines = []
    command = out / "command.txt"
    if command.is_file():
        lines.append(f"Reproduce: `{command.read_text().strip()}`\n")
    if campaign is not None:
        total = len(campaign.cells()) * len(campaign.seeds)
        if len(rows) < total:
            lines.append(
                f"_Partial: {len(rows)} of {total} runs done; the campaign resumes where it stopped._\n"
            )
    devices = sorted({r["device"] for r in rows if r.get("device")})
    if devices:
        lines.append(f"Device: {'; '.join(devices)}.\n")
    lines.append(render_tables(rows, campaign, link_prefix=f"{out.as_posix()}/"))
    return "\n".join(lines).rstrip() + "\n"


def update_readme(readme: Path, results_dir: Path, names: list[str] | None = None) -> list[str]:
    """Regenerate the marked blocks (all of them, or those of ``names``); returns the names written."""
    if not readme.is_file():
        raise ReadmeError(f"No README at {readme}.")
    text = readme.read_text()
    found = _OPEN.findall(text)
    for name in found:
        opens = _marker_lines(text, f"<!-- results:{name} -->")
        if len(opens) != 1 or len(_marker_lines(text, f"<!-- /results:{name} -->")) != 1:
            raise ReadmeError(
                f"{readme}: '<!-- results:{name} -->' needs exactly one '<!-- /results:{name} -->'."
            )
    wanted = names or found
    if not wanted:
        raise ReadmeError(f"{readme} has no '<!-- results:NAME -->' ... '<!-- /results:NAME -->' markers.")
    missing = [n for n in wanted if n not in found]
    if missing:
        raise ReadmeError(
            f"{readme} has no markers for {missing}: add '<!-- results:NAME -->' and "
            "'<!-- /results:NAME -->' lines where the tables belong."
        )
    for name in wanted:
        open_tag, close_tag = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
        start = _marker_lines(text, open_tag)[0] + len(open_tag)
        end = _marker_lines(text, close_tag)[0]
        if end < start:
            raise ReadmeError(f"{readme}: '{close_tag}' comes before '{open_tag}'.")
        text = text[:start] + "\n" + render_block(results_dir, name) + text[end:]
    readme.write_text(text)
    return wanted
