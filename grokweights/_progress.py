"""Progress reporting: one small place that owns tqdm.

Library functions take an optional ``progress`` callback (``progress(n_bytes_done_now)``) or a
:class:`Progress` object; the CLI builds bars with :func:`bar`, which honours ``-q``,
``GROKWEIGHTS_DISABLE_PROGRESS=1`` and non-TTY stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from . import constants

__all__ = ["Progress", "bar", "NullProgress", "enabled"]


class Progress(Protocol):
    """What long-running library calls report to: bytes done, and an optional status text."""

    def update(self, n: int) -> None: ...

    def set_description(self, text: str) -> None: ...


class NullProgress:
    """A progress sink that ignores everything."""

    def update(self, n: int) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass


def enabled(quiet: bool = False) -> bool:
    """Whether bars should be drawn: not quiet, not disabled by the environment, stderr is a TTY."""
    return not (quiet or constants.DISABLE_PROGRESS or not sys.stderr.isatty())


@contextmanager
def bar(total: int | None, *, desc: str = "", quiet: bool = False, unit: str = "B") -> Iterator[Progress]:
    """A tqdm bar on stderr in bytes (rate, ETA), or a silent sink when bars are disabled."""
    if not enabled(quiet):
        yield NullProgress()
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, unit_scale=True, unit_divisor=1024, file=sys.stderr,
              dynamic_ncols=True, leave=False) as t:
        yield t
