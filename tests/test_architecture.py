"""The package's layering (README, Architecture): imports run one way and library code never imports
Streamlit. Read from the source (every import, also those inside functions), so a cycle hidden behind a
function-level import counts."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mlops_local"
# A layer may import only from the layers listed for it (and from itself).
BOTTOM = {"runmeta", "errors", "settings", "uris", "restclient", "health", "owner", "logsetup", "background",
          "interrupts"}
ALLOWED = {
    "ml": BOTTOM | {"tracking", "runs"},
    "sweep": BOTTOM | {"tracking", "runs", "ml"},
    "metrics": BOTTOM | {"tracking", "runs", "ml", "reaper"},
    "serving": BOTTOM | {"tracking", "runs", "ml", "services"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            # "from mlops_local import tracking" names the package too: count only the module
            graph[name].update(t for t in targets if t in modules and t not in (name, "mlops_local"))
            if any(t == "streamlit" or t.startswith("streamlit.") for t in targets):
                graph[name].add("streamlit")
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_import_cycles() -> None:
    assert _cycles(_imports()) == []


def test_cycle_finder_finds_one() -> None:  # the check above can fail
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers_import_only_downwards() -> None:
    wrong = sorted(f"{module} -> {target}" for module, targets in _imports().items()
                   for target in targets if target != "streamlit"
                   and _layer(module) in ALLOWED and _layer(target) != _layer(module)
                   and _layer(target) not in ALLOWED[_layer(module)])
    assert wrong == []


def test_only_the_ui_imports_streamlit() -> None:
    users = sorted(m for m, targets in _imports().items() if "streamlit" in targets)
    assert users and all(_layer(m) in {"ui", "services"} for m in users), users
