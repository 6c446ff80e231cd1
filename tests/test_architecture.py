"""The house holds: every package stays behind its walls, and no module imports itself in a circle.

Every module of ``grokweights`` is parsed with ``ast`` (nothing is imported); every import counts, at module
level and inside functions. ``docs/architecture.md`` draws the same walls.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "grokweights"
HEAVY = {"jax", "jaxlib", "tensorstore", "libtorrent"}
#: top-level modules every package may use; they import no package of grokweights.
UTILITIES = {"errors", "constants", "_atomic", "_progress", "_space", "_lazy", "_isolated", "_lockfile", "_sizes",
             "_directio"}

#: package -> (grokweights packages it may import besides itself and the utilities, third-party it must not)
WALLS: dict[str, tuple[set[str], set[str]]] = {
    "checkpoint": (set(), HEAVY),
    "torrent": ({"checkpoint"}, {"jax", "jaxlib", "tensorstore"}),
    "sharding": ({"checkpoint"}, HEAVY),
    "store": ({"checkpoint", "sharding"}, {"jax", "jaxlib", "libtorrent"}),
    "model": ({"checkpoint"}, {"libtorrent", "tensorstore"}),
    "runtime": ({"checkpoint", "sharding", "store", "model"}, {"libtorrent"}),
    "engines": ({"checkpoint", "sharding", "store"}, {"jax", "jaxlib", "libtorrent"}),
    "stream": ({"checkpoint", "torrent", "sharding", "store"}, {"jax", "jaxlib"}),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """``(absolute module name, line)`` of every import in ``path``, relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or (node.level and _is_package(target)):
                # ``from . import kv`` / ``from .store import index``: the names may be modules
                out += [(f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target, node.lineno)
                        for a in node.names]
            else:
                out.append((target, node.lineno))
    return out


def _path_of(module: str) -> Path:
    return ROOT.parent.joinpath(*module.split("."))


def _is_package(module: str) -> bool:
    return (_path_of(module) / "__init__.py").is_file()


def _is_module(module: str) -> bool:
    path = _path_of(module)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _room(module: str) -> str:
    """``checkpoint``, ``cli``, ... for a module of a package; the module's own name at the top level."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def wall_violations(graph: dict[str, list[tuple[str, int]]], paths: dict[str, Path]) -> list[str]:
    problems = []
    for module, imports in graph.items():
        room = _room(module)
        for target, line in imports:
            where = f"{paths[module].relative_to(ROOT.parent)}:{line}"
            top = target.split(".")[0]
            if top != "grokweights":
                if room in WALLS and top in WALLS[room][1]:
                    problems.append(f"{where}: package {room} imports {top}")
                elif room in UTILITIES and top in HEAVY:
                    problems.append(f"{where}: utility {room} imports {top}")
                continue
            other = _room(target)
            if other == "cli" and room not in ("cli", "__main__"):
                problems.append(f"{where}: {module} imports the CLI ({target})")
            elif room in UTILITIES and other and other not in UTILITIES:
                problems.append(f"{where}: utility {module} imports {target}")
            elif room in WALLS and other != room and other not in UTILITIES and other not in WALLS[room][0]:
                problems.append(f"{where}: package {room} imports {target} (allowed: "
                                f"{', '.join(sorted(WALLS[room][0])) or 'nothing'} and the utilities)")
    return problems


def cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def house() -> tuple[dict[str, list[tuple[str, int]]], dict[str, Path]]:
    paths = modules()
    return {name: imports_of(path) for name, path in paths.items()}, paths


def test_every_wall_holds(house):
    graph, paths = house
    assert wall_violations(graph, paths) == []


def test_no_import_cycle(house):
    graph, _ = house
    internal = {m: sorted({t for t, _ in imports if t in graph and t != m}) for m, imports in graph.items()}
    assert cycles(internal) == []


def test_modules_are_imported_by_name_not_bound_as_aliases(house):
    """``import grokweights.a.b as m`` binds the package's attribute ``b``, which a package face may have
    replaced with a function of the same name; ``from grokweights.a import b`` / ``from .b import x`` are used."""
    offenders = []
    for module, path in house[1].items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                offenders += [f"{module}: import {a.name} as {a.asname}" for a in node.names
                              if a.asname and a.name.startswith("grokweights.") and a.name.count(".") > 1]
    assert offenders == []


def test_the_walls_catch_a_crossing(tmp_path):
    """The checker itself: a format-core module importing jax, and one importing the CLI, are both reported."""
    graph = {"grokweights.checkpoint.bad": [("jax.numpy", 3), ("grokweights.cli.core", 4),
                                            ("grokweights.store.kv", 5)],
             "grokweights.model.ok": [("jax", 1), ("grokweights.checkpoint.config", 2)]}
    paths = {m: ROOT / "x.py" for m in graph}
    found = wall_violations(graph, paths)
    assert len(found) == 3 and "imports jax" in found[0] and "imports the CLI" in found[1]
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


def test_modules_stay_small(house):
    big = {m: n for m, p in house[1].items() if (n := len(p.read_text().splitlines())) > 420}
    assert big == {}


def test_every_package_is_packaged():
    """A wheel holds exactly the packages pyproject.toml lists: every package of the tree must be there."""
    listed = set(tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p) for p in ROOT.rglob("__init__.py")}
    assert found - listed == set()
