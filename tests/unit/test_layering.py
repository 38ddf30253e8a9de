"""The dependency direction the README draws (`adapters -> schemas <- worker`,
`refundctl` on top), held by reading every module's imports: no package imports
upward, the operator tools do not import the worker process, and no module imports
itself back through others."""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "adapters", "worker", "refundctl")
# What each package may import of ours (itself included).
ALLOWED = {
    "schemas": {"schemas"},
    "adapters": {"adapters", "schemas"},
    "worker": {"worker", "schemas"},
    "refundctl": {"refundctl", "adapters", "worker", "schemas"},
}
OPERATOR_TOOLS = (
    "worker.replay",
    "worker.dead_letters",
    "worker.status",
    "worker.cancels",
    "worker.migrate",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def imports_of(path: Path) -> Iterator[str]:
    """The modules of ours `path` imports, at any depth of its code."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (name for name in names if name.split(".")[0] in PACKAGES)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {imported for imported in imports_of(path) if imported in known}
        for name, path in known.items()
    }


def test_every_package_imports_only_what_it_may() -> None:
    upward = [
        f"{name} imports {imported}"
        for name, path in modules().items()
        for imported in imports_of(path)
        if imported.split(".")[0] not in ALLOWED[name.split(".")[0]]
    ]
    assert upward == []


@pytest.mark.parametrize("tool", [*OPERATOR_TOOLS, "worker.ops"])
def test_operator_tools_do_not_import_the_worker_process(tool: str) -> None:
    edges = graph()
    reachable: set[str] = set()
    pending = [name for name in edges if name == tool or name.startswith(f"{tool}.")]
    while pending:  # bounded: each module is visited once
        name = pending.pop()
        if name not in reachable:
            reachable.add(name)
            pending.extend(edges[name])
    assert "worker.consumer" not in reachable


def test_no_module_imports_itself_back() -> None:
    edges = graph()
    cycles: list[str] = []
    for start in edges:
        seen: set[str] = set()
        pending = list(edges[start])
        while pending:
            name = pending.pop()
            if name == start:
                cycles.append(start)
                break
            if name not in seen:
                seen.add(name)
                pending.extend(edges[name])
    # A package's __init__ re-exporting its modules is not a cycle of code.
    assert [name for name in cycles if name not in PACKAGES] == []


def test_the_graph_is_read() -> None:
    """The checks above see the real imports (a parser that saw none would pass them)."""
    edges = graph()
    assert "worker.decision" in edges["worker.apply"]
    assert "schemas" in edges["adapters.contract"] or any(
        name.startswith("schemas") for name in edges["adapters.contract"]
    )
