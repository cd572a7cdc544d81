"""The package's imports, read from the source (function-level imports included): no circles, and the layers
import one way (apps -> models/callbacks -> data; models never import callbacks)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "lit_vision"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The lit_vision modules ``name`` imports anywhere in its file: ``from a.b import c`` counts as
    ``a.b.c`` when that is a module, else ``a.b``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_reader_sees_imports_of_every_kind() -> None:
    """The walk must see what it is meant to police: a function-level import and a relative one."""
    assert "lit_vision.data.streaming" in GRAPH["lit_vision.data.shards"]  # inside convert()
    assert "lit_vision.models.zoo.external" in GRAPH["lit_vision.models.zoo.registry"]  # inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(GRAPH) == []


def test_layers_import_one_way() -> None:
    def layer(name: str) -> str:
        return name.split(".")[1] if name.count(".") >= 1 else ""

    wrong = []
    for name, targets in GRAPH.items():
        for target in targets:
            if layer(name) == "data" and layer(target) in ("models", "callbacks", "compare", "cli"):
                wrong.append(f"{name} -> {target}")
            if layer(name) == "models" and layer(target) in ("callbacks", "compare", "cli"):
                wrong.append(f"{name} -> {target}")
            if layer(name) == "callbacks" and layer(target) in ("compare", "cli"):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


# models/ by concern, lowest first: each sub-package imports only those before it (and itself).
MODEL_PACKAGES = ["zoo", "checkpoint_io", "training", "inference", "inspection"]


def test_model_subpackages_import_one_way() -> None:
    def package(name: str) -> str | None:
        parts = name.split(".")
        return parts[2] if name.startswith("lit_vision.models.") and parts[2] in MODEL_PACKAGES else None

    wrong = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if package(name)
        and package(target)
        and MODEL_PACKAGES.index(package(target)) > MODEL_PACKAGES.index(package(name))
    ]
    assert wrong == []
    # every module of models/ sits in one of them (the package's __init__ and __main__ aside)
    loose = [n for n in MODULES if n.startswith("lit_vision.models.") and n.count(".") == 2]
    assert sorted(loose) == sorted(
        ["lit_vision.models.__main__", *(f"lit_vision.models.{p}" for p in MODEL_PACKAGES)]
    )
