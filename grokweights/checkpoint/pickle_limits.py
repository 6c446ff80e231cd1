"""Bounds on what the pickle machine of :mod:`.pickle_parse` builds, and bounded summaries for its messages.

A shard's header is a few hundred bytes of pickle: some 50 opcodes, a stack a dozen deep, objects nested
four levels. A hostile stream can ask for far more from a few bytes: the memo lets 40 opcode pairs build a
structure of 2^40 leaves (shared, so it costs nothing until something walks it, such as ``repr`` in an
error message), and 200 000 TUPLE1 opcodes nest a tuple deeper than ``repr`` can recurse. So every
container the machine builds is measured when built (its leaves counted as a tree, however much it
shares, and its depth), and the machine stops with an error past the limits below, which are orders of
magnitude above anything the release holds. Error messages show objects through :func:`summary`, which
looks at a bounded number of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["MAX_OPS", "MAX_STACK", "MAX_MEMO", "MAX_MARKS", "MAX_DEPTH", "MAX_LEAVES", "MAX_RANK", "MAX_ELEMENTS",
           "Budget", "summary", "shape_problem"]

#: opcodes one stream may execute (the release's headers use about 50).
MAX_OPS = 100_000
#: objects on the stack at once, marks open at once, memo entries.
MAX_STACK = 1_000
MAX_MARKS = 100
MAX_MEMO = 1_000
#: nesting depth of tuples and dicts, and leaves of one container counted as a tree (shared parts counted
#: each time they occur).
MAX_DEPTH = 32
MAX_LEAVES = 10_000
#: dimensions of an array, and elements of an array counting a zero-sized dimension as one.
MAX_RANK = 32
MAX_ELEMENTS = 2**62


class Budget:
    """Sizes (leaves, depth) of the containers a stream built, checked against the limits as they are built.

    Containers are kept alive here so their ids stay theirs. A dict that has been put inside another
    container may not be filled further (its size was counted where it was put).
    """

    def __init__(self, fail: Callable[[str], NoReturn]) -> None:
        self.fail = fail
        self.sizes: dict[int, tuple[int, int]] = {}
        self.frozen: set[int] = set()
        self.keep: list[object] = []

    def measure(self, obj: object) -> tuple[int, int]:
        if isinstance(obj, (tuple, dict)):
            return self.sizes.get(id(obj), (1, 1))
        return (1, 0)

    def _register(self, obj: Any, items: list[object]) -> None:
        leaves, depth = 1, 1
        for item in items:
            sub_leaves, sub_depth = self.measure(item)
            leaves += sub_leaves
            depth = max(depth, sub_depth + 1)
            if isinstance(item, dict):
                self.frozen.add(id(item))
        if depth > MAX_DEPTH:
            self.fail(f"objects nested {depth} deep (a shard nests at most a few levels; limit {MAX_DEPTH})")
        if leaves > MAX_LEAVES:
            self.fail(f"a container of more than {MAX_LEAVES} objects (built through shared memo references)")
        if id(obj) not in self.sizes:
            self.keep.append(obj)
        self.sizes[id(obj)] = (leaves, depth)

    def tuple(self, items: list[object]) -> tuple:
        """A new tuple of ``items``, measured."""
        result = tuple(items)
        if result:
            self._register(result, items)
        return result

    def new_dict(self) -> dict:
        result: dict = {}
        self._register(result, [])
        return result

    def fill(self, target: dict, items: dict[str, object]) -> None:
        """Set ``items`` in ``target`` (a dict this budget made), measured."""
        if id(target) in self.frozen or id(target) not in self.sizes:
            self.fail("SETITEMS on a dict that is already part of another object")
        target.update(items)
        self._register(target, [*target.keys(), *target.values()])


def shape_problem(shape: tuple[int, ...]) -> str | None:
    """Why ``shape`` (a tuple of non-negative Python ints) cannot be an array's, or None."""
    if len(shape) > MAX_RANK:
        return f"array of {len(shape)} dimensions (limit {MAX_RANK})"
    elements = 1
    for size in shape:
        elements *= max(size, 1)
        if elements > MAX_ELEMENTS:
            return f"array shape {summary(shape)} has more than 2^62 elements"
    return None


def summary(obj: object, depth: int = 2, width: int = 4) -> str:
    """A short description of ``obj`` that looks at no more than ``width ** depth`` objects."""
    if isinstance(obj, (tuple, list)):
        if depth <= 0:
            return f"<{type(obj).__name__} of {len(obj)}>"
        inner = [summary(x, depth - 1, width) for x in obj[:width]]
        if len(obj) > width:
            inner.append(f"... {len(obj) - width} more")
        return ("({})" if isinstance(obj, tuple) else "[{}]").format(", ".join(inner) + ("," if len(obj) == 1 else ""))
    if isinstance(obj, dict):
        if depth <= 0:
            return f"<dict of {len(obj)}>"
        inner = [f"{summary(k, 0)}: {summary(v, depth - 1, width)}" for k, v in list(obj.items())[:width]]
        return "{" + ", ".join(inner + ([f"... {len(obj) - width} more"] if len(obj) > width else [])) + "}"
    if isinstance(obj, str):
        return repr(obj[:40]) + ("..." if len(obj) > 40 else "")
    if isinstance(obj, (bytes, bytearray)):
        return repr(bytes(obj[:16])) + ("..." if len(obj) > 16 else "")
    if isinstance(obj, bool) or obj is None:
        return repr(obj)
    if isinstance(obj, int):
        return repr(obj) if obj.bit_length() <= 64 else f"<int of {obj.bit_length()} bits>"
    short = getattr(obj, "summary", None)
    if callable(short):
        return str(short())[:80]
    return f"<{type(obj).__name__}>"
