"""Keep the documented result tables true: regenerate what stands between ``<!-- results:NAME -->`` and
``<!-- /results:NAME -->`` from ``results/NAME/``.

The tables live in the docs site's results page, ``docs/results.md`` (``DEFAULT_PAGE``, what
``python -m lit_vision.compare readme`` writes); any Markdown file with markers works (``--readme PATH``).
The generated block is a function of the committed result files alone (no dates, no machine state), so
running the command twice changes nothing, and a diff of the page shows exactly which numbers moved. Links
to the plots are relative to the page's folder, so they resolve wherever the page is (``../results/NAME/``
from ``docs/``, ``results/NAME/`` from the repository root).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lit_vision.compare.campaign import Campaign, CampaignError
from lit_vision.compare.results import read_rows
from lit_vision.compare.summary import render_tables

__all__ = ["DEFAULT_PAGE", "ReadmeError", "render_block", "update_readme"]

#: The page the generated tables live in (relative to the repository root, where the command runs).
DEFAULT_PAGE = Path("docs/results.md")

# A marker is a line of its own: the same text inside a sentence or a code span is documentation.
_OPEN = re.compile(r"^<!-- results:([A-Za-z0-9_.-]+) -->[ \t]*$", re.MULTILINE)


def _marker_lines(text: str, tag: str) -> list[int]:
    """Start offsets of the lines that hold exactly ``tag``."""
    return [m.start() for m in re.finditer(rf"^{re.escape(tag)}[ \t]*$", text, re.MULTILINE)]


class ReadmeError(ValueError):
    """A marker without its partner, or a marker whose campaign has no results."""


def render_block(results_dir: Path, name: str, link_base: Path | None = None) -> str:
    """The Markdown of one campaign's block: the command that reproduces it, the device, the tables.

    Args:
        results_dir: the results root (``results``), holding ``NAME/results.csv``.
        name: the campaign.
        link_base: the folder the plot links are relative to (the page's folder); ``None``: links start
            with ``results_dir`` as given.
    """
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
    prefix = out.as_posix() if link_base is None else Path(os.path.relpath(out, link_base)).as_posix()
    lines.append(render_tables(rows, campaign, link_prefix=f"{prefix}/"))
    return "\n".join(lines).rstrip() + "\n"


def update_readme(
    readme: Path, results_dir: Path, names: list[str] | None = None, link_base: Path | None = None
) -> list[str]:
    """Regenerate the marked blocks of a Markdown page (all of them, or those of ``names``).

    Args:
        readme: the page with the markers (``docs/results.md`` by default on the command line).
        results_dir: the results root (``results``).
        names: campaigns to regenerate; ``None``: every marker of the page.
        link_base: the folder the plot links are relative to; ``None``: the page's own folder.

    Returns:
        The names of the blocks written.

    Raises:
        ReadmeError: no page, a marker without its partner, a name without markers, or no results.
    """
    if not readme.is_file():
        raise ReadmeError(f"No page at {readme}.")
    link_base = readme.parent if link_base is None else link_base
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
        text = text[:start] + "\n" + render_block(results_dir, name, link_base) + text[end:]
    readme.write_text(text)
    return wanted
