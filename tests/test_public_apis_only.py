"""src/ uses its dependencies through their public APIs only: no ``obj._private`` on another
library's object, no private module or name imported from one. Checked on the source's syntax
tree: an underscore attribute is ours only if src/ itself defines it."""

from __future__ import annotations

import ast
from pathlib import Path

from servers import ROOT

SOURCE = ROOT / "src" / "auth_refresh"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def names_defined_in(trees: list[ast.Module]) -> set[str]:
    """The underscore names src/ defines: functions, classes, attributes set on self/cls,
    assignments at module or class level."""
    defined: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}:
                    defined.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
    return {name for name in defined if _private(name)}


def private_uses(path: Path, tree: ast.Module, ours: set[str]) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in ours:
            found.append(f"{where} reads .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"getattr", "setattr", "hasattr", "delattr"}
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and node.args[1].value not in ours
        ):
            found.append(f"{where} {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            external = not node.module.startswith("auth_refresh")
            parts = node.module.split(".")
            if external and any(_private(part) for part in parts):
                found.append(f"{where} imports the private module {node.module}")
            for alias in node.names:
                if external and _private(alias.name):
                    found.append(f"{where} imports {alias.name} from {node.module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(_private(part) for part in alias.name.split(".")):
                    found.append(f"{where} imports the private module {alias.name}")
    return found


def scan(files: list[Path]) -> list[str]:
    trees = {path: ast.parse(path.read_text(), str(path)) for path in files}
    ours = names_defined_in(list(trees.values()))
    return [use for path, tree in trees.items() for use in private_uses(path, tree, ours)]


def test_src_reads_no_private_attribute_of_another_library() -> None:
    assert scan(sorted(SOURCE.glob("*.py"))) == []


def test_the_scan_catches_what_main_s_redis_store_did(tmp_path: Path) -> None:
    ours = tmp_path / "store.py"
    ours.write_text(
        "from redis.asyncio.connection import AbstractConnection\n"
        "from redis._parsers import _AsyncHiredisParser\n"
        "import redis._parsers.hiredis\n"
        "class Pipe:\n"
        "    def __init__(self, connection: AbstractConnection) -> None:\n"
        "        self._connection = connection\n"
        "        writer = connection._writer\n"
        "    def close(self) -> None:\n"
        "        self._connection._close()\n"
        "        getattr(self._connection, '_reader', None)\n"
    )
    found = {use.split(" ", 1)[1] for use in scan([ours])}
    assert found == {
        "imports the private module redis._parsers",
        "imports _AsyncHiredisParser from redis._parsers",
        "imports the private module redis._parsers.hiredis",
        "reads ._writer",
        "reads ._close",
        "getattr(..., '_reader')",
    }
