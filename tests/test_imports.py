"""Layering: every module imports; the import graph (module-level *and* function-level imports) has no cycles;
the core depends on nothing above it; no library module imports the CLI; calibration/ is never imported by the
core or the stages below it."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "calibration")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _project(name: str) -> str | None:
    """The project module ``name`` refers to (``pipeline.core.artifact.X`` -> ``pipeline.core.artifact``)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in MODULES:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, node)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                dep = _project(t)
                if dep and dep != module:
                    graph[module].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_no_import_cycles():
    graph = import_graph()
    # A package __init__ that re-exports its submodules is the package's face, not a layer: drop the edge
    # submodule -> own package (``from . import x`` inside the package would otherwise look like a cycle).
    for m in graph:
        graph[m] = {d for d in graph[m] if not (MODULES[d].name == "__init__.py" and m.startswith(d + "."))}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layering():
    graph = import_graph()
    core = {m for m in MODULES if m.startswith("pipeline.core")}
    allowed_below_core = {"pipeline.errors", "pipeline.io"}
    for m in core:
        outside = {d for d in graph[m] if d not in core and d not in allowed_below_core}
        assert not outside, f"{m} (core) imports {sorted(outside)}"
    for m, deps in graph.items():
        if m != "pipeline.cli":
            assert "pipeline.cli" not in deps, f"{m} imports pipeline.cli (argparse wiring is a leaf)"
    stages_below_calibration = {"pipeline.export", "pipeline.rewrite", "pipeline.build", "pipeline.model",
                                "pipeline.checkpoint", "pipeline.iam", "pipeline.io", "pipeline.manifest",
                                "pipeline.runners", "pipeline.compare", "pipeline.verify", "pipeline.errors"} | core
    for m in stages_below_calibration:
        calib = {d for d in graph[m] if d.startswith("calibration")}
        assert not calib, f"{m} imports {sorted(calib)}: calibration/ is layered above the core and the stages"
