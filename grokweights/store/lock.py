"""One writer per store: an advisory lock file in a local destination, held for a whole write.

``DST/.grokweights.lock`` is locked with ``fcntl.flock`` (exclusive, non-blocking) and holds the writer's
pid while it runs. A second writer is refused at once, naming the holder's pid and the lock file; the
kernel drops the lock when the holder exits, even after ``kill -9``, so a stale file never blocks. The
file itself stays (deleting it would let two writers lock two different files). Stores on other drivers
(``memory://``, ``gs://``, ``s3://``) have no lock: run one writer at a time there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from .._lockfile import hold_lock
from ..constants import STORE_LOCK_NAME
from ..errors import StoreError
from .specs import local_path

__all__ = ["LOCK_NAME", "writer_lock"]

#: the lock file inside a local store.
LOCK_NAME = STORE_LOCK_NAME


@contextlib.contextmanager
def writer_lock(kvstore: dict[str, Any]) -> Iterator[str | None]:
    """Hold the store's writer lock (local stores; yields the lock file's path, or None elsewhere).

    Raises:
        StoreError: another process holds the lock (its pid and the lock file are named), or the lock file
            cannot be created or is not a regular file.
    """
    root = local_path(kvstore)
    if root is None:
        yield None
        return
    path = os.path.join(root, LOCK_NAME)
    busy = (lambda pid: f"{root.rstrip('/')}: another reshard is writing this store (pid {pid}, lock {path}); wait "
            "for it to finish or stop it, then rerun")
    with hold_lock(path, what="the store's lock file", busy=busy, error=StoreError):
        yield path
