"""The house rules, read from the source: every import counts, those inside functions and under
``TYPE_CHECKING`` too.

- no import cycle among the package's modules;
- the ground (settings, exceptions, telemetry, _utils, types) imports only the ground;
- ``tokens/`` imports only ``tokens/`` and the ground; ``stores/`` only ``stores/`` and the
  ground; ``transport/`` only ``transport/``, ``tokens/`` and the ground;
- the request walks (``flows/``) never import the registration (``registration/``) nor the
  companions' modules;
- no module over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import auth_refresh

PACKAGE = Path(auth_refresh.__file__).parent
GROUND = {"settings", "exceptions", "telemetry", "_utils", "types"}
ALLOWED = {
    "ground": {"ground"},
    "tokens": {"tokens", "ground"},
    "stores": {"stores", "ground"},
    "transport": {"transport", "tokens", "ground"},
    "flows": {"flows", "transport", "tokens", "stores", "rotation", "ground"},
}
MAX_LINES = 400


def module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The package's modules ``name`` imports, wherever the import statement stands."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target in MODULES and target != name:
                found.add(target)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> str:
    first = name.split(".")[1] if "." in name else ""
    return "ground" if first in GROUND else first


def test_the_package_is_read_whole() -> None:
    # The rules below can only fail if the walk finds the modules and their imports.
    assert {"auth_refresh.flows.refresh", "auth_refresh.stores.base"} <= MODULES.keys()
    assert "auth_refresh.stores.base" in GRAPH["auth_refresh.stores.memory"]


def test_no_import_cycle() -> None:
    cycles = []
    for start in GRAPH:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in GRAPH[node]:
                if nxt == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert cycles == []


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n) in ALLOWED))
def test_each_layer_imports_only_what_is_beneath_it(name: str) -> None:
    above = {target for target in GRAPH[name] if layer(target) not in ALLOWED[layer(name)]}
    assert above == set()


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_400_lines(name: str) -> None:
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES
