"""MkDocs hooks (``mkdocs.yml``: ``hooks``) for the docs site.

* The committed campaign plots are served with the site. ``docs/results.md`` links each as
  ``../results/<campaign>/<plot>.png`` (what ``python -m lit_vision.compare readme`` writes: relative to the
  page, so the links also work in a repository browser). Those files live outside ``docs/``; every
  ``results/*/*.png`` is added to the site under ``results/<campaign>/`` and registered under the path the
  page links to, so the strict build resolves the links (and a plot that goes missing fails it).
* Every top-level module and package of ``lit_vision`` must be on an API page (a ``::: lit_vision.NAME``
  line under ``docs/api/``): one that is not is a warning, which fails the strict build.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

__all__ = ["on_files", "on_pre_build"]

log = logging.getLogger(f"mkdocs.plugins.{__name__}")


def on_pre_build(config: Any) -> None:
    docs = Path(config["docs_dir"])
    package = docs.parent / "lit_vision"
    documented: set[str] = set()
    for page in (docs / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: (lit_vision(?:\.\w+)?)\s*$", page.read_text(), re.MULTILINE))
    modules = {f"lit_vision.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {f"lit_vision.{p.parent.name}" for p in package.glob("*/__init__.py")}
    for name in sorted(modules - documented):
        log.warning(f"{name} is on no API page: add '::: {name}' to a page under docs/api/.")


def on_files(files: Files, config: Any) -> Files:
    docs = Path(config["docs_dir"])
    results = docs.parent / "results"
    for plot in sorted(results.glob("*/*.png")):
        relative = plot.relative_to(results).as_posix()
        file = File(
            f"../results/{relative}",  # the link as written in docs/*.md
            src_dir=str(docs),
            dest_dir=config["site_dir"],
            use_directory_urls=config["use_directory_urls"],
            dest_uri=f"results/{relative}",
            inclusion=InclusionLevel.INCLUDED,  # a path with ".." would count as hidden and be left out
        )
        files.append(file)
    return files
