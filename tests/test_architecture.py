"""The rules of docs/design.md's package map, checked on the source (imports read with ``ast``,
lazy imports inside functions included: a cycle through a lazy import is still a cycle)."""
from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "binarynet"
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 300


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: pathlib.Path) -> set:
    """Every module (binarynet's and third-party roots) that ``name`` imports anywhere."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            # ``from . import x`` / ``from .pkg import sub`` may name submodules
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(name, path):
            # the deepest binarynet module this import names (``a.b.func`` -> ``a.b``)
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycle(graph: dict):
    """One import cycle as a list of modules, or None. Packages' ``__init__`` re-exports are
    edges too, but a package importing its own submodules is not a cycle by itself."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if node.startswith(target + "."):  # a submodule importing its package: Python runs
                continue                        # the package first, no cycle of ours
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    assert _cycle(_graph()) is None


def test_library_never_imports_the_cli():
    offenders = {m: sorted(t for t in targets if t.startswith("binarynet.commands") or t == "binarynet.cli")
                 for m, targets in _graph().items()
                 if not (m.startswith("binarynet.commands") or m in ("binarynet.cli", "binarynet.__main__"))}
    assert {m: t for m, t in offenders.items() if t} == {}


def test_engine_never_imports_torch_or_the_gpu_backend():
    modules = _modules()
    offenders = {}
    for name, path in modules.items():
        if not name.startswith("binarynet.engine"):
            continue
        bad = sorted(i for i in _imports(name, path)
                     if i.split(".")[0] in ("torch", "triton") or i.startswith("binarynet.gpu"))
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_module_sizes():
    too_long = {name: n for name, path in _modules().items()
                if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert too_long == {}


def test_function_sizes():
    too_long = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long[f"{name}.{node.name}"] = length
    assert too_long == {}


def test_class_sizes():
    too_long = {}
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long[f"{name}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert too_long == {}


def test_no_module_shadows_the_standard_library():
    import sys
    shadowing = sorted(name for name in _modules() if name.rpartition(".")[2] in sys.stdlib_module_names)
    assert shadowing == []


@pytest.mark.parametrize("pattern", ["spec §", "bnn-spec"])
def test_docstrings_cite_documents_the_repository_has(pattern):
    root = SRC.parent
    files = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.c"), *PACKAGE.rglob("*.h"),
             *(root / "tests").glob("*.py"), *(root / "benchmarks").glob("*.py")]
    citing = sorted(str(p.relative_to(root)) for p in files
                    if p.name != "test_architecture.py" and pattern in p.read_text())
    assert citing == []
