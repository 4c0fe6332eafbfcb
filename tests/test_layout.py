"""The house rules of python/segpcl, read from the source (nothing is imported): no import cycle (every import
counts, also those inside functions and importlib calls with a constant name), no long functions in the
engine, the method and the measurements, and a small package root."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "segpcl"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the segpcl modules it imports (anywhere in its body)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module":
                if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                    targets = [node.args[0].value]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in colour:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return None

    for node in sorted(graph):
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return None


def _without_init_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    # importing `pkg.sub` runs pkg/__init__ first, but an __init__ that lazily names its submodules (segpcl's
    # own __getattr__ table) is not a cycle: drop the edge from a package's __init__ to its own children
    out = {}
    for name, deps in graph.items():
        out[name] = {d for d in deps if not d.startswith(name + ".")}
    return out


def test_no_import_cycle():
    cycle = find_cycle(_without_init_edges(import_graph()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walker_sees_cycles_inside_functions(tmp_path):
    pkg = tmp_path / "segpcl"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    assert find_cycle(import_graph(pkg)) == ["segpcl.a", "segpcl.b", "segpcl.a"]
    (pkg / "b.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(pkg)) is None


LONG_FUNCTION = 80
"""Lines a function in engine/, method/ or perf/ may span (docstring included)."""


def long_functions(folders=("engine", "method", "perf")) -> list[str]:
    out = []
    for folder in folders:
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = node.end_lineno - node.lineno + 1
                    if n > LONG_FUNCTION:
                        out.append(f"{path.relative_to(PACKAGE)}:{node.name} ({n} lines)")
    return out


def test_no_long_function_in_engine_method_perf():
    assert long_functions() == []


def test_package_root_is_small():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 7, root
