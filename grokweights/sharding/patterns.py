"""Rule patterns that cannot backtrack catastrophically, checked before they are ever matched.

A rules file is user input, and Python's regular expressions backtrack: ``(a+)+$``, ``(a|a)*`` or twenty
``(x|x)`` groups in a row take exponential time on a key of 30 characters, and the standard library has no
timeout. Rather than match under a timer, a pattern is accepted only when a static bound on the paths the
backtracking matcher can try on a key is small:

* a sequence multiplies the bounds of its items, an alternation adds those of its branches;
* a quantifier over a single character (``\\d+``, ``.*``, ``[a-z]{2,5}``) contributes the number of lengths
  it can take on a key of at most :data:`MAX_KEY` characters;
* an optional group (``(_v)?``) contributes one plus the bound of the group;
* any other repetition of a group (``(ab)+``, nested quantifiers) is refused, and so are back-references and
  look-arounds, which rule patterns do not need.

Patterns must be at most :data:`MAX_PATTERN` characters and their bound at most :data:`MAX_PATHS`. Parameter
keys (``transformer/decoder_layer_12/moe/linear_v/w``) are far shorter than :data:`MAX_KEY`. Every pattern of
the built-in rule sets bounds at a few hundred paths.
"""

from __future__ import annotations

import re

try:  # Python >= 3.11
    from re import _constants as sre  # type: ignore[attr-defined]
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as sre  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

from ..errors import MeshError

__all__ = ["check_pattern", "path_bound", "MAX_PATTERN", "MAX_PATHS", "MAX_KEY"]

MAX_PATTERN = 256
MAX_PATHS = 20_000
MAX_KEY = 128

_SINGLE = {sre.LITERAL, sre.NOT_LITERAL, sre.IN, sre.ANY, sre.CATEGORY}
_ZERO_WIDTH = {sre.AT}
_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT)}


class _Refused(Exception):
    pass


def _cap(n: int) -> int:
    return min(n, MAX_PATHS + 1)


def _sequence(items) -> int:
    total = 1
    for op, arg in items:
        total = _cap(total * _item(op, arg))
    return total


def _item(op, arg) -> int:
    if op in _SINGLE or op in _ZERO_WIDTH:
        return 1
    if op is sre.SUBPATTERN:
        return _sequence(arg[-1])
    if op is getattr(sre, "ATOMIC_GROUP", None):
        return _sequence(arg)
    if op is sre.BRANCH:
        return _cap(sum(_sequence(branch) for branch in arg[1]))
    if op in _REPEATS:
        low, high, sub = arg
        high = min(high, MAX_KEY)
        if len(sub) == 1 and sub[0][0] in _SINGLE:
            return _cap(max(1, high - low + 1))
        if high <= 1:
            return _cap(1 + _sequence(sub))
        raise _Refused("repeats a group, which could backtrack without bound (a quantifier may repeat one "
                       "character or make a group optional)")
    raise _Refused(f"uses {str(op).lower()}, which rule patterns do not support")


def path_bound(pattern: str) -> int:
    """An upper bound (saturating at ``MAX_PATHS + 1``) on the paths matching ``pattern`` can backtrack over."""
    return _sequence(sre_parse.parse(pattern))


def check_pattern(pattern: str, *, where: str = "rule pattern") -> None:
    """Raise :class:`MeshError` unless ``pattern`` is a valid, short regular expression of bounded backtracking."""
    shown = pattern if len(pattern) <= 60 else pattern[:60] + "..."
    fix = "simplify it (docs/python-api.md: rule patterns)"
    if len(pattern) > MAX_PATTERN:
        raise MeshError(f"{where} {shown!r} is {len(pattern)} characters (at most {MAX_PATTERN}); {fix}",
                        actual=pattern)
    try:
        re.compile(pattern)
        bound = path_bound(pattern)
    except re.error as exc:
        raise MeshError(f"{where} {shown!r} is not a valid regular expression ({exc}); fix it",
                        actual=pattern) from None
    except _Refused as exc:
        raise MeshError(f"{where} {shown!r} {exc}; {fix}", actual=pattern) from None
    if bound > MAX_PATHS:
        raise MeshError(f"{where} {shown!r} could backtrack over more than {MAX_PATHS} paths per key (too many "
                        f"alternatives or quantifiers in a row); {fix}", actual=pattern)
