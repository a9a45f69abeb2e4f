"""The package's layers point one way: no import cycle anywhere in operator/modelport
(function-level imports included), and the layers of style.md (`api ← render ←
status ← controller`; `kube` alone talks to Kubernetes; the gateway never imports the
controller or Kopf)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "modelport"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """What `module` imports: modules of ours by name, and others by top-level name."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for name in names:
            ours = _resolve(name)
            if ours is not None and name.startswith("modelport"):
                found.add(ours)
            elif not name.startswith("modelport"):
                found.add(name.split(".")[0])
    found.discard(module)
    return found


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan). A module's
    import of its own package's `__init__` is not an edge: Python runs the package
    first anyway."""
    graph = {
        m: {t for t in imports(m) if t in MODULES and not m.startswith(t + ".")} for m in MODULES
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle() -> None:
    assert cycles() == []


def _under(prefix: str) -> list[str]:
    return [m for m in MODULES if m == prefix or m.startswith(prefix + ".")]


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        # The gateway runs in every endpoint's pods: no controller, no Kopf, no
        # Kubernetes client, no rendering.
        ("modelport.gateway", {"modelport.controller", "modelport.kube", "kopf", "kubernetes"}),
        # Pure layers below the controller do no I/O and know nothing above them.
        ("modelport.api", {"modelport.render", "modelport.status", "modelport.controller"}),
        ("modelport.render", {"modelport.status", "modelport.controller", "modelport.kube"}),
        ("modelport.status", {"modelport.controller", "modelport.kube", "kopf", "aiohttp"}),
        ("modelport.observe", {"modelport.controller", "modelport.kube", "kopf", "aiohttp"}),
        ("modelport.settings", {"modelport.controller", "modelport.render", "kopf"}),
        # Talking to Kubernetes is kube's job alone; it knows nothing of the controller.
        ("modelport.kube", {"modelport.controller", "kubernetes"}),
        # Leaves.
        ("modelport.objects", {"modelport"}),
        ("modelport.gpuprofiles", {"modelport"}),
    ],
)
def test_layers_point_one_way(layer: str, forbidden: set[str]) -> None:
    modules = _under(layer)
    assert modules, layer
    broken = {
        (module, target)
        for module in modules
        for target in imports(module)
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    }
    assert not broken


def test_only_the_controller_imports_kopf() -> None:
    users = {m for m in MODULES if "kopf" in imports(m)}
    assert {m for m in users if not m.startswith("modelport.controller")} == set()


def test_a_cycle_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    # The checker itself: settings importing the controller back is the cycle this
    # test was written against.
    real = imports

    def with_cycle(module: str) -> set[str]:
        found = real(module)
        return found | {"modelport.controller.cli"} if module == "modelport.settings" else found

    monkeypatch.setitem(globals(), "imports", with_cycle)
    assert any("modelport.settings" in c for c in cycles())
