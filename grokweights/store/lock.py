"""One writer per store: an advisory lock file in a local destination, held for a whole write.

``DST/.grokweights.lock`` is locked with ``fcntl.flock`` (exclusive, non-blocking) and holds the writer's
pid while it runs. A second writer is refused at once, naming the holder's pid and the lock file; the
kernel drops the lock when the holder exits, even after ``kill -9``, so a stale file never blocks. The
file itself stays (deleting it would let two writers lock two different files). Stores on other drivers
(``memory://``, ``gs://``, ``s3://``) have no lock: run one writer at a time there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from typing import Any

from ..constants import STORE_LOCK_NAME
from ..errors import StoreError
from .specs import local_path

__all__ = ["LOCK_NAME", "writer_lock"]

#: the lock file inside a local store.
LOCK_NAME = STORE_LOCK_NAME


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def writer_lock(kvstore: dict[str, Any]) -> Iterator[str | None]:
    """Hold the store's writer lock (local stores; yields the lock file's path, or None elsewhere).

    Raises:
        StoreError: another process holds the lock (its pid and the lock file are named), or the lock file
            cannot be created.
    """
    root = local_path(kvstore)
    if root is None:
        yield None
        return
    path = os.path.join(root, LOCK_NAME)
    try:
        os.makedirs(root, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the store's lock file ({exc.strerror}); check the destination",
                         path=path) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreError(f"{path}: cannot lock the store ({exc.strerror})", path=path) from None
            raise StoreError(f"{root.rstrip('/')}: another reshard is writing this store (pid {_holder(fd)}, lock "
                             f"{path}); wait for it to finish or stop it, then rerun", path=path,
                             actual=_holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
