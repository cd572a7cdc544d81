"""Griffe extension for the API pages of the docs site (``mkdocs.yml`` loads it; ``make docs``).

The docstrings are Google style (``Args:``), with two habits the Google parser does not know:

* Sphinx roles (``:class:`~lit_vision.models.Ensemble```, ``:func:``, ``:mod:``, ``:meth:``, ``:attr:``,
  ``:data:``, ``:exc:``) would show as literal text: they become code spans (``~`` keeps the last name).
* One ``Args:`` entry for several parameters (``min_lr, max_lr: the sweep's ends``) would be read as one
  parameter named ``min_lr, max_lr`` and fail the strict build as "not in the signature": it becomes one
  entry per name with the same description, so each name is still checked against the signature.

Only the text given to the parser changes; the source files are untouched.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

__all__ = ["GoogleDocstringHabits"]

_ROLE = re.compile(r":(?:class|func|mod|meth|attr|data|exc|obj):`(~?)([^`]+)`")
_SECTION = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$"
)
_NAMES = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)+):(.*)$")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _split_entries(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    in_args, args_indent = False, 0
    while i < len(lines):
        line = lines[i]
        section = _SECTION.match(line)
        if section:
            in_args, args_indent = True, len(section.group(1))
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        if in_args and line.strip() and indent <= args_indent:
            in_args = False  # the next section (or text) starts
        entry = _NAMES.match(line) if in_args else None
        if entry is None:
            out.append(line)
            i += 1
            continue
        pad, names, first = entry.groups()
        body = [first]
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(pad)):
            body.append("\n" + lines[i])
            i += 1
        for name in re.split(r"\s*,\s*", names):
            out.append(f"{pad}{name}:{''.join(body)}")
    return "\n".join(out)


class GoogleDocstringHabits(Extension):
    """Rewrite each docstring's text as described in the module docstring, before it is parsed."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        text = _ROLE.sub(_role, obj.docstring.value)
        obj.docstring.value = _split_entries(text)
