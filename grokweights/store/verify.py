"""``grokweights verify STORE``: re-hash every array of a finished store against its index.

Each array is opened through :class:`.reader.Store` (so its ``zarr.json`` must be the one the index recorded
for its path), read back row by row through the store's verified read path (every chunk's crc32c checked,
and its place against the chunk table; a missing chunk an error) and its sha256 compared with the index's.
Two arrays are hashed at a time, each reading its next row while it hashes the current one. Every bad array
is reported; the store index itself must be intact
(:func:`.index.read_index`), else nothing can be checked and a :class:`StoreError` is raised.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError
from .index import index_digest
from .reader import Store

__all__ = ["verify_store", "StoreVerifyReport", "ArrayCheck"]


@dataclass(frozen=True)
class ArrayCheck:
    """One array's result: ``ok``, ``mismatch`` (data differs from the index) or ``damaged`` (unreadable)."""

    path: str
    status: str
    detail: str = ""


@dataclass
class StoreVerifyReport:
    location: str
    digest: str = ""
    arrays: list[ArrayCheck] = field(default_factory=list)
    bytes_hashed: int = 0
    seconds: float = 0.0

    @property
    def failures(self) -> list[ArrayCheck]:
        return [a for a in self.arrays if a.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.location, "ok": self.ok, "index_digest": self.digest, "arrays": len(self.arrays),
                "failures": [{"path": a.path, "status": a.status, "detail": a.detail} for a in self.failures],
                "bytes_hashed": self.bytes_hashed, "seconds": round(self.seconds, 3)}


def verify_store(location: str | os.PathLike[str], *, progress: Callable[[int], None] | None = None
                 ) -> StoreVerifyReport:
    """Check every array of the store at ``location`` against its index (see the module docstring).

    Raises:
        StoreError: no store here, an unfinished one, or its index is damaged.
    """
    started = time.perf_counter()
    store = Store(location)
    report = StoreVerifyReport(store.location, digest=index_digest(store.index))
    # arrays hashed two at a time (sha256 is the bottleneck: one core each), largest first so they end together
    paths = sorted(store.keys(), key=lambda p: -store.plan.array(p).nbytes)
    with ThreadPoolExecutor(min(2, os.cpu_count() or 1), thread_name_prefix="verify") as pool:
        checks = dict(zip(paths, pool.map(lambda p: _check(store, p, progress), paths), strict=True))
    report.arrays = [checks[p] for p in store.keys()]
    report.bytes_hashed = sum(store.plan.array(p).nbytes for p in paths)
    report.seconds = time.perf_counter() - started
    return report


def _check(store: Store, path: str, progress: Callable[[int], None] | None) -> ArrayCheck:
    try:
        digest = store.sha256(path)
    except StoreError as exc:
        return ArrayCheck(path, "damaged", str(exc))
    finally:
        if progress is not None:
            progress(store.plan.array(path).nbytes)
    expected = store.index["sha256"].get(path)
    if digest != expected:
        return ArrayCheck(path, "mismatch", f"sha256 {digest}, the index records {expected}")
    return ArrayCheck(path, "ok")
