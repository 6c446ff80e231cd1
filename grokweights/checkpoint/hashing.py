"""Streaming sha256 of large files, in parallel across files.

hashlib releases the GIL while it hashes a large buffer, so plain threads scale across cores; reads go
into one reusable buffer per thread (no allocation per chunk) so the hash, not Python, is the limit.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from ..constants import HASH_CHUNK_BYTES
from .files import open_regular

__all__ = ["sha256_file", "hash_files", "default_jobs"]


def default_jobs() -> int:
    """Threads to hash with: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def sha256_file(path: str | os.PathLike[str], *, progress: Callable[[int], None] | None = None,
                chunk_bytes: int = HASH_CHUNK_BYTES) -> str:
    """Hex sha256 of a file, read in ``chunk_bytes`` pieces into a reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    with open_regular(path, buffering=0) as f:
        while True:
            n = f.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
            if progress is not None:
                progress(n)
    return digest.hexdigest()


def hash_files(paths: Iterable[str | os.PathLike[str]], *, jobs: int | None = None,
               progress: Callable[[int], None] | None = None) -> dict[str, str | OSError]:
    """sha256 of each path, ``jobs`` files at a time; an unreadable file maps to its OSError."""
    paths = [os.fspath(p) for p in paths]
    lock = threading.Lock()

    def report(n: int) -> None:
        if progress is not None:
            with lock:
                progress(n)

    def one(path: str) -> str | OSError:
        try:
            return sha256_file(path, progress=report)
        except OSError as exc:
            return exc

    jobs = jobs or default_jobs()
    if jobs == 1 or len(paths) <= 1:
        return {p: one(p) for p in paths}
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sha256") as pool:
        return dict(zip(paths, pool.map(one, paths)))
