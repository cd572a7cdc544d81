"""Sizes in the package (issue 33): no function over 60 lines and no class over 300 in ``lit_vision/``.

Lines are counted from ``def``/``class`` to the end of the body, docstrings left out (a class's own and its
methods'): a documented argument list is the CLI's ``--help``, never a reason to split. A function or class
that must stay longer goes in ``ALLOWED`` with its reason.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator

from helpers import ROOT

PACKAGE = ROOT / "lit_vision"
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 300

#: ``module.qualified.name`` -> why it may be longer than the limit
ALLOWED: dict[str, str] = {}

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def docstring_lines(node: Definition) -> int:
    """Lines of ``node``'s docstring (0 without one)."""
    first = node.body[0] if node.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first.end_lineno - first.lineno + 1
    return 0


def own_lines(node: Definition) -> int:
    """Lines from ``def``/``class`` to the end, less the docstring (for a class, its methods' too)."""
    lines = node.end_lineno - node.lineno + 1 - docstring_lines(node)
    if isinstance(node, ast.ClassDef):
        methods = (n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
        lines -= sum(docstring_lines(n) for n in methods)
    return lines


def definitions(tree: ast.AST, prefix: str) -> Iterator[tuple[str, Definition]]:
    """Every function and class in ``tree``, nested ones included, with its qualified name."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}.{node.name}"
            yield name, node
            yield from definitions(node, name)
        else:
            yield from definitions(node, prefix)


def oversized(source: str, module: str) -> dict[str, int]:
    """Qualified name -> lines of every function over ``MAX_FUNCTION_LINES`` and every class over
    ``MAX_CLASS_LINES`` in ``source``."""
    found = {}
    for name, node in definitions(ast.parse(source), module):
        limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
        if own_lines(node) > limit:
            found[name] = own_lines(node)
    return found


def package_oversized() -> dict[str, int]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found |= oversized(path.read_text(), module)
    return found


def test_the_counter_leaves_out_docstrings_and_finds_nested_definitions() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))  # + the def line: the limit
    method = "\n".join(f"        y{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # + def: one over
    source = (
        f'def fits():\n    """A docstring\n\n    of four lines."""\n{body}\n\n\n'
        f'class Holder:\n    """Class docstring."""\n\n    def too_long(self):\n'
        f'        """Its docstring."""\n{method}\n'
    )
    tree = ast.parse(source)
    sizes = {name: own_lines(node) for name, node in definitions(tree, "m")}
    assert sizes == {
        "m.fits": MAX_FUNCTION_LINES,
        "m.Holder": 2 + MAX_FUNCTION_LINES + 1,  # class line, blank line, def + body
        "m.Holder.too_long": MAX_FUNCTION_LINES + 1,
    }
    assert oversized(source, "m") == {"m.Holder.too_long": MAX_FUNCTION_LINES + 1}
    big_class = "class Big:\n" + textwrap.indent(
        "\n".join(f"z{i} = {i}" for i in range(MAX_CLASS_LINES)), "    "
    )
    assert oversized(big_class, "m") == {"m.Big": MAX_CLASS_LINES + 1}


def test_no_function_over_60_lines_and_no_class_over_300() -> None:
    found = package_oversized()
    over = {name: lines for name, lines in found.items() if name not in ALLOWED}
    assert over == {}, (
        f"over {MAX_FUNCTION_LINES} lines (functions) or {MAX_CLASS_LINES} (classes), docstrings left out: "
        f"{over}; split them, or add each to ALLOWED with the reason it must stay whole"
    )
    stale = sorted(set(ALLOWED) - set(found))
    assert stale == [], f"ALLOWED names code that is gone or now within the limits: {stale}"
