"""The layout is a contract (docs/ARCHITECTURE.md): imports only point down the layers, no module
imports itself back through others, and no module grows past ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "regner"

# Top to bottom. A module may import modules of its own subpackage and of any lower layer.
LAYERS: list[tuple[str, ...]] = [
    ("__main__",),
    ("cli",),
    ("experiments", "pretraining"),
    ("training",),
    ("inference",),
    ("config",),
    ("regularizers",),
    ("model",),
    ("data",),
    ("runs",),
    ("errors", "__init__"),
]
MAX_LINES = 420


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the regner modules it imports}, function-level (lazy) imports included."""
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        base = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    anchor = base.split(".")[: len(base.split(".")) - node.level + 1]
                    module = ".".join(anchor + ([module] if module else []))
                found = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            else:
                continue
            targets.update(t for t in found if t == "regner" or t.startswith("regner."))
        graph[name] = {t for t in targets if t != name}
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = "__init__" if len(parts) == 1 else parts[1]
    for rank, names in enumerate(LAYERS):
        if key in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add its subpackage to LAYERS and docs/ARCHITECTURE.md")


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Edges from a module to a module of a higher layer, or to another subpackage of its own layer."""
    bad = []
    for source, targets in graph.items():
        for target in targets:
            if subpackage(source) == subpackage(target):
                continue
            if layer_of(target) <= layer_of(source):
                bad.append(f"{source} imports {target}")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_imports_point_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_every_module_has_a_layer():
    for module in import_graph():
        layer_of(module)


def test_the_checks_catch_what_they_forbid():
    graph = {"regner.model.head": {"regner.training.trainer"}, "regner.training.trainer": {"regner.model.head"},
             "regner.data.features": {"regner.runs.io"}, "regner.experiments.stats": {"regner.pretraining.corpus"}}
    assert cycles(graph) == [["regner.model.head", "regner.training.trainer"]]
    assert upward_imports(graph) == ["regner.experiments.stats imports regner.pretraining.corpus",
                                     "regner.model.head imports regner.training.trainer"]


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    package = tmp_path / "regner"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model" / "__init__.py").write_text("")
    (package / "model" / "head.py").write_text("def f():\n    from regner.training import trainer\n")
    (package / "model" / "loss.py").write_text("from .head import f\nfrom . import head\n")
    graph = import_graph(package)
    assert graph["regner.model.head"] == {"regner.training"}
    assert graph["regner.model.loss"] == {"regner.model.head"}


def test_no_module_is_too_long():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (docs/ARCHITECTURE.md): {long}"


def test_every_subpackage_is_packaged():
    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert found - listed == set(), "add these packages to pyproject.toml's [tool.setuptools] packages"
