"""The package layering of design.md: a package imports only packages below it."""

from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "petcd"
BASE = {"pb", "errors"}
ALLOWED: dict[str, set[str]] = {
    "pb": set(),
    "errors": {"pb"},
    "raft": BASE,
    "wal": BASE,
    "mvcc": BASE,
    "lease": BASE | {"mvcc"},
    "auth": BASE | {"mvcc"},
    "membership": BASE | {"mvcc", "raft"},
    "transport": BASE | {"raft"},
    "server": BASE | {"raft", "wal", "mvcc", "lease", "auth", "membership", "transport"},
    "api": BASE | {"raft", "wal", "mvcc", "lease", "auth", "membership", "transport", "server"},
    "client": BASE,
    "ctl": BASE | {"client"},
    "benchmark": BASE | {"client"},
    "utl": BASE | {"raft", "wal", "mvcc", "membership"},
}


def _imported_layers(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    layers: set[str] = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "petcd" and len(parts) > 1 and parts[1] in ALLOWED:
            layers.add(parts[1])
    return layers


def test_layering() -> None:
    violations = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        layer = rel.parts[0].removesuffix(".py")
        if layer not in ALLOWED:
            continue
        for used in _imported_layers(path) - ALLOWED[layer] - {layer}:
            violations.append(f"{rel} imports petcd.{used}")
    assert violations == []
