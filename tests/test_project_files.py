"""What a new user meets before any code runs: the packaging metadata ``make setup`` builds from, and the
README's first lines."""

from __future__ import annotations

import re

import pytest
from helpers import ROOT
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_license_is_an_spdx_string_the_build_backend_understands() -> None:
    """The ``license = {text = ...}`` table makes setuptools print a deprecation warning on every
    ``make setup``; the SPDX string form needs setuptools 77 or newer, so the build requirement must not
    allow an older one (which would reject the string)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"
    setuptools = [Requirement(r) for r in pyproject["build-system"]["requires"]]
    setuptools = [r for r in setuptools if r.name == "setuptools"]
    assert setuptools, "setuptools missing from build-system.requires"
    for older in ("64", "76.1"):
        assert not setuptools[0].specifier.contains(older), f"setuptools {older} cannot read license = 'MIT'"
    assert setuptools[0].specifier.contains("77.0")


def test_readme_states_the_test_suite_time_in_one_place() -> None:
    """The time ``make test`` takes is measured in one place, the development page of the docs; the README's
    opening lines and its "Tests" section point there instead of carrying numbers that drift from it."""
    readme = (ROOT / "README.md").read_text()
    opening = readme[: readme.index("\n## ")]  # everything before the first section
    make_test = [line for line in opening.splitlines() if line.startswith("make test")]
    assert make_test, "the opening no longer shows `make test`"
    for line in make_test:
        assert not re.search(r"\d\s*(min|minutes|s\b|h\b)", line), f"a time outside the docs: {line!r}"
        assert '"Tests"' in line, f"should point to the Tests section: {line!r}"
    tests = readme[readme.index("\n## Tests\n") :].split("\n## ")[1]
    assert not re.search(r"\d\s*(min|minutes)\b", tests), "a second measured time in the README's Tests"
    assert "docs/development.md" in tests
    development = (ROOT / "docs" / "development.md").read_text()
    assert re.search(r"took\s+[\d.]+\s+minutes\s+\(`time make test`\)", development), (
        "the measured time left docs/development.md"
    )
