"""Write, then rename: a file appears under its name only once it is complete.

A writer fills ``.NAME.partial`` beside the target and renames it into place; an interrupted write leaves
at most that hidden temporary file, never a half-written ``NAME``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import WriteError

__all__ = ["atomic_path", "atomic_file", "write_atomic"]


def atomic_path(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.partial")


@contextmanager
def atomic_file(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[BinaryIO]:
    """A binary file open for writing under the temporary name, renamed to ``path`` when the block completes.

    With ``fsync`` the data reaches the disk before the rename, so after a crash the file is either the old
    one or the complete new one. If the block raises, the temporary file is removed and ``path`` untouched.
    """
    path = Path(path)
    tmp = atomic_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, fsync: bool = False) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically (see :func:`atomic_file`); returns the path.

    Raises:
        WriteError: the file could not be written (an ``OSError`` too): one line naming it and the system's reason.
    """
    try:
        with atomic_file(path, fsync=fsync) as f:
            f.write(data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        if isinstance(exc, WriteError):
            raise
        name = os.fspath(path)
        raise WriteError(f"{name}: cannot write this file ({exc.strerror or exc}); nothing was written under its "
                         "name: free space, or choose another place", path=name, actual=exc.strerror) from exc
    return Path(path)
