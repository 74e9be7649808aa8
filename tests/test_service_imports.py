"""The service cores stay sans-IO: no asyncio, no sockets (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parent.parent / "service"
CORES = ["directory.py", "watch.py", "resolve.py", "proxy_v2.py", "site.py", "errors.py"]
FORBIDDEN = {"asyncio", "socket", "selectors", "threading", "pyroute2", "h11"}


@pytest.mark.parametrize("name", CORES)
def test_core_imports_no_io(name: str) -> None:
    tree = ast.parse((SERVICE / name).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
