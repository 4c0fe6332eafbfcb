"""The typed stub python/segpcl/_core.pyi says exactly what the built segpcl._core holds."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from segpcl import _core  # built by `maturin develop`; a missing extension must fail, not skip

STUB = Path(__file__).resolve().parents[1] / "python" / "segpcl" / "_core.pyi"


def _stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"))


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _stub_class(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def test_stub_parses_and_documents_everything():
    tree = _stub_tree()
    assert ast.get_docstring(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            assert ast.get_docstring(node), f"{node.name} has no docstring in the stub"


def test_public_names_match():
    stub = {n for n in _top_level_names(_stub_tree()) if not n.startswith("_")}
    module = {n for n in dir(_core) if not n.startswith("_")}
    assert stub == module
    assert "__version__" in _top_level_names(_stub_tree())
    assert isinstance(_core.__version__, str)


def test_prototype_bank_methods_match():
    stub = _methods(_stub_class(_stub_tree(), "PrototypeBank"))
    cls = _core.PrototypeBank
    public = {n for n in dir(cls) if not n.startswith("_")}
    assert {n for n in stub if not n.startswith("_")} == public
    for dunder in (n for n in stub if n.startswith("__")):
        assert dunder == "__init__" or dunder in vars(cls), f"{dunder} is in the stub, not in the class"


def _stub_params(fn: ast.FunctionDef) -> list[str]:
    args = fn.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg != "self"]


@pytest.mark.parametrize("name", ["select_key_edges", "select_neighbors", "build_info"])
def test_function_signatures_match(name):
    fn = next(n for n in _stub_tree().body if isinstance(n, ast.FunctionDef) and n.name == name)
    assert _stub_params(fn) == list(inspect.signature(getattr(_core, name)).parameters)


def test_method_signatures_match():
    stub = _methods(_stub_class(_stub_tree(), "PrototypeBank"))
    for name in ("update", "add_sums", "set_means", "migrate", "means", "counts", "state_dict", "from_state"):
        runtime = inspect.signature(getattr(_core.PrototypeBank, name))
        params = [p for p in runtime.parameters if p not in ("self", "$self")]
        assert _stub_params(stub[name]) == params, name
    assert _stub_params(stub["__init__"]) == list(inspect.signature(_core.PrototypeBank).parameters)
