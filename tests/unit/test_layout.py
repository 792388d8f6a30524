"""The layout holds: imports point down only (ARCHITECTURE.md's layers), no package-level import
cycles inside bvh_ops (function-level imports count too: they hide cycles, not remove them),
no Prefect in the domain, the shared core imports no procedure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "bvh_ops"
PROCEDURES = {"logical", "physical", "wal", "drill", "monitoring", "alerting", "logs", "audit", "maintenance", "security",
              "capacity", "demo", "cli", "walcmd", "files", "archive",
              "orphans", "rotation", "replica", "standby"}
CORE = {"config", "errors", "keys", "stream", "results", "dsn", "children", "conditions", "progress"}


def _node(module: str) -> str:
    """bvh_ops.physical.backup -> physical; bvh_ops.keys -> keys."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "bvh_ops":
                found.update(f"bvh_ops.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        yield ".".join(rel.parts).removesuffix(".__init__"), path


GRAPH: dict[str, set[str]] = {}
IMPORTS: dict[str, set[str]] = {}
for _mod, _path in _modules():
    IMPORTS[_mod] = _imports(_path)
    GRAPH.setdefault(_node(_mod), set()).update(
        _node(i) for i in IMPORTS[_mod] if i.startswith("bvh_ops.") and _node(i) != _node(_mod))


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_domain_never_imports_prefect_flows_tasks_or_checks(module):
    if _node(module) in ("cli", "demo", "orphans"):
        pytest.skip("cli/ and demo/ drive the flows; orphans talks to the Prefect API by design")
    bad = sorted(i for i in IMPORTS[module] if i.split(".")[0] in ("prefect", "flows", "tasks", "checks"))
    assert not bad, f"{module} imports {bad}: the domain stays free of Prefect and of the layers above it"


def test_no_import_cycles_between_packages():
    cycles = []

    def visit(node, stack):
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif len(stack) < 12:
                visit(nxt, stack + [nxt])

    for start in sorted(GRAPH):
        visit(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


@pytest.mark.parametrize("package", ["repository", "storage", "pg", "opsdb", *sorted(CORE)])
def test_lower_layers_import_no_procedure(package):
    bad = sorted(GRAPH.get(package, set()) & PROCEDURES)
    assert not bad, f"{package} imports procedure packages {bad}"


def test_storage_base_knows_no_driver():
    assert not {i for i in IMPORTS["bvh_ops.storage.base"] if i.startswith("bvh_ops.storage.")}


def test_lsn_module_is_standard_library_only():
    assert not {i for i in IMPORTS["bvh_ops.pg.lsn"] if i.startswith("bvh_ops") and i != "bvh_ops.errors"}


def test_conditions_module_is_standard_library_only():
    """The configuration parses endpoint conditions with it at load: it must import nothing of ours."""
    assert not {i for i in IMPORTS["bvh_ops.conditions"] if i.startswith("bvh_ops")}
