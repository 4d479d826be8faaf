"""The layers' import rules, read from the source: imports run server -> broker -> {protocol,
storage} -> config/errors and never back up, and no two modules import each other (type-only
imports included), so a reader can take the tree one layer at a time (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYER = {
    "errors": 0,
    "plural": 0,
    "hostport": 0,
    "dataclass": 0,
    "protocol": 1,
    "config": 2,
    "storage": 3,
    "broker": 4,
    "server": 5,
    "client": 6,  # the toolkit: on librdkafka, for any Kafka; imports no broker layer
    "roundtrip": 6,  # one request and its answer on a blocking socket, for tools and testing
    "testing": 7,
    "tools": 7,
    "bench": 8,  # benchmarks start their brokers with the testing kit's BrokerProcess
    "cli": 9,
    "__main__": 10,
    "__init__": 0,  # the package root holds only the version
}
"""A module may import modules of a lower layer, or of its own package; nothing else."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every sluice module and the sluice modules it imports (relative imports resolved)."""
    modules = {_module_name(p): p for p in (SRC / "sluice").rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("sluice"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sluice"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    found.add(candidate if candidate in modules else node.module)
        out[name] = {m for m in found if m in modules and m != name}
    return out


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return top, LAYER[top]


def test_imports_run_down_the_layers() -> None:
    wrong = []
    for module, imported in _imports().items():
        top, level = _layer(module)
        for target in imported:
            target_top, target_level = _layer(target)
            if target_top != top and target_level >= level:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_broker_storage_and_protocol_never_import_the_server() -> None:
    offenders = [
        m
        for m, imported in _imports().items()
        if _layer(m)[0] in ("broker", "storage", "protocol") and any(i.startswith("sluice.server") for i in imported)
    ]
    assert offenders == []


def test_no_import_cycles() -> None:
    graph = _imports()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    # A package's __init__ re-exporting its modules, imported back by name, is not a cycle worth
    # failing for: it is the package's own root.
    real = [c for c in cycles if not any(m.count(".") == 1 and m in {"sluice.storage", "sluice.protocol", "sluice.testing", "sluice.tools", "sluice.broker.groups"} for m in c)]
    assert real == [], real


def test_the_rules_see_the_tree() -> None:
    """The reader finds the modules and their imports (a rule over nothing proves nothing)."""
    graph = _imports()
    assert "sluice.broker.broker" in graph and "sluice.storage.log" in graph
    assert "sluice.storage.manager" in graph["sluice.broker.broker"]
    assert "sluice.config" in graph["sluice.server.app"]


def test_the_client_toolkit_depends_on_no_other_layer() -> None:
    """``sluice.client`` works against any Kafka, so it imports nothing of sluice but itself."""
    outside = {
        (m, i)
        for m, imported in _imports().items()
        if m.startswith("sluice.client")
        for i in imported
        if not i.startswith("sluice.client")
    }
    assert "sluice.client.producer" in _imports()
    assert outside == set()
