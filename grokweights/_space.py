"""Free disk space: one measurement, one preflight, both honouring ``GROKWEIGHTS_FREE_SPACE_BYTES``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from .constants import FREE_SPACE_ENV
from .errors import InsufficientSpaceError, UsageError

__all__ = ["free_space", "require_space", "gib"]


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (a destination may not exist yet)."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def free_space(path: str | os.PathLike[str]) -> int:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent).

    ``GROKWEIGHTS_FREE_SPACE_BYTES`` (read at each call) overrides the figure, to rehearse a full disk.
    """
    override = os.environ.get(FREE_SPACE_ENV)
    if override:
        text = override.strip()
        if not text.isdigit():
            raise UsageError(f"{FREE_SPACE_ENV}={override!r} is not a number of bytes; unset it or give e.g. "
                             f"{FREE_SPACE_ENV}=1000000000", expected="a non-negative integer", actual=override)
        return int(text)
    return shutil.disk_usage(_existing(Path(path))).free


def gib(n: int) -> str:
    """``n`` bytes as GiB text with two decimals."""
    return f"{n / 1024**3:.2f} GiB"


def require_space(path: str | os.PathLike[str], needed: int, *, what: str = "to write", hint: str = "",
                  measure: Callable[[Path], int] | None = None) -> int:
    """Raise :class:`InsufficientSpaceError` unless ``needed`` bytes fit at ``path``; returns the free bytes.

    ``measure(path)`` replaces :func:`free_space` (a caller's own figure, e.g. a fetch option)."""
    available = (measure or free_space)(Path(path))
    if needed > available:
        fix = hint or "free space or choose another destination"
        raise InsufficientSpaceError(
            f"not enough free space at {path}: {needed:,} bytes {what} ({gib(needed)}), {available:,} available "
            f"({gib(available)}); {fix}", path=os.fspath(path), expected=needed, actual=available)
    return available
