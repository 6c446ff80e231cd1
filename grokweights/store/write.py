"""One write of a store: the one object ``reshard`` and ``fetch --reshard`` / ``reshard --follow`` write through.

A :class:`StoreWrite` owns every step a caller could otherwise get wrong, in order::

    with StoreWrite(dst, jobs=..., sync=True, progress=...) as write:   # the store's writer lock, held
        write.begin(plan, manifest=..., sources={file: identity})       # index checked, completed arrays
                                                                         # proven, store unpublished if needed
        write.write_shard("tensor00000_000", ckpt)                       # its arrays not yet complete,
        ...                                                              # durable and published
        digests = write.finish()                                         # every array complete: the index

The lock is taken when the ``with`` block is entered, before the plan is known (``fetch --reshard`` holds it
for the whole download and learns the plan when the manifest arrives). Leaving the block waits for every
publication and releases the lock; nothing is left half-published (an array's ``zarr.json`` is written only
after its chunks are durable, the index only after every array is published).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..sharding.plan import ArrayPlan, ReshardPlan
from . import kv as tskv
from .index import existing_index, unpublish, write_index
from .lock import writer_lock
from .specs import kvstore_spec, local_path
from .writer import ArrayWriter, completed

__all__ = ["StoreWrite"]


class StoreWrite:
    """A write of the store at ``dst`` (see the module docstring); a context manager.

    Args:
        dst: the store (a local path or tensorstore URL).
        jobs: chunks written at once (default: the CPUs).
        sync: make each array's chunks durable (``syncfs`` of a local store) before publishing it.
        progress: called with byte counts as arrays are written.
    """

    def __init__(self, dst: str | os.PathLike[str], *, jobs: int | None = None, sync: bool = True,
                 progress: Callable[[int], None] | None = None) -> None:
        self.dst = os.fspath(dst)
        self.kv = kvstore_spec(dst)
        self.jobs, self.sync = jobs or os.cpu_count() or 2, sync
        self._progress = progress or (lambda n: None)
        #: bytes of arrays written by this store write
        self.bytes_written = 0
        self.ctx = tskv.context(jobs=self.jobs, sync=False)  # durability: one syncfs per array
        self.plan: ReshardPlan | None = None
        self.digests: dict[str, str | None] = {}
        self._source: dict[str, Any] | None = None
        self._identities: dict[str, dict[str, Any]] = {}
        self._by_file: dict[str, list[ArrayPlan]] = {}
        self._stack = contextlib.ExitStack()
        self._writer: ArrayWriter | None = None

    def _written(self, n: int) -> None:
        self.bytes_written += n
        self._progress(n)

    @property
    def local(self) -> str | None:
        """The store's folder on a local disk, or None."""
        return local_path(self.kv)

    def __enter__(self) -> StoreWrite:
        self._stack.enter_context(writer_lock(self.kv))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def begin(self, plan: ReshardPlan, *, sources: dict[str, dict[str, Any]],
              manifest: dict[str, Any] | None = None) -> StoreWrite:
        """Start writing ``plan``: refuse a store for another plan, prove which arrays are already complete
        (their record names this plan and this source, every chunk is there), and unpublish the store unless
        nothing is left to write.

        Args:
            sources: the identity of every source shard the plan reads (``writer.source_identity``), by file name.
            manifest: the identity of the source manifest, recorded in the index.
        """
        if self.plan is not None:
            raise StoreError(f"{self.dst}: this store write has already begun", path=self.dst)
        existing = existing_index(self.dst, plan, self.ctx)
        self.plan, self._source, self._identities = plan, manifest, sources
        self._by_file = {}
        for array in plan.arrays:
            self._by_file.setdefault(array.source_file, []).append(array)
        self.digests = {a.store_path: completed(a, self.kv, self.ctx, sources[a.source_file]) for a in plan.arrays}
        if self.todo or existing is None:  # unfinished again until every array is proven complete
            unpublish(self.kv, self.ctx)
        self._writer = self._stack.enter_context(ArrayWriter(self.kv, self.ctx, sync=self.sync, jobs=self.jobs,
                                                             progress=self._written))
        return self

    # ------------------------------------------------------------------------------------------ state

    @property
    def todo(self) -> list[ArrayPlan]:
        """Arrays still to write, in plan order."""
        return [a for a in self._plan.arrays if self.digests[a.store_path] is None]

    def done(self, file: str) -> bool:
        """Whether every array of source shard ``file`` is complete."""
        return all(self.digests[a.store_path] is not None for a in self._by_file.get(file, ()))

    def arrays_of(self, file: str) -> list[ArrayPlan]:
        """The arrays the plan makes from source shard ``file``."""
        return list(self._by_file.get(file, ()))

    def bytes_to_write(self) -> int:
        """Store bytes still to write (before compression)."""
        return sum(a.nbytes for a in self.todo)

    @property
    def _plan(self) -> ReshardPlan:
        if self.plan is None:
            raise StoreError(f"{self.dst}: the store write has not begun (no plan yet)", path=self.dst)
        return self.plan

    # ------------------------------------------------------------------------------------------ writing

    def write(self, array: ArrayPlan, ckpt: str) -> str:
        """Write one array from its shard in ``ckpt`` (published in the background); returns its sha256."""
        assert self._writer is not None
        digest = self._writer.write(array, ckpt, self._identities[array.source_file])
        self.digests[array.store_path] = digest
        return digest

    def write_shard(self, file: str, ckpt: str) -> list[ArrayPlan]:
        """Write every array of source shard ``file`` not yet complete and wait until they are durable and
        published (then the shard may be deleted); returns the arrays written."""
        written = [a for a in self.arrays_of(file) if self.digests[a.store_path] is None]
        for array in written:
            self.write(array, ckpt)
        self.wait()
        return written

    def wait(self) -> None:
        """Wait until every array written so far is published."""
        if self._writer is not None:
            self._writer.wait()

    def finish(self) -> dict[str, str]:
        """Wait for every publication, check every array is complete and write the index; every sha256.

        Raises:
            StoreError: an array of the plan was never written (naming its source shard).
        """
        self.wait()
        missing = self.todo
        if missing:
            files = list(dict.fromkeys(a.source_file for a in missing))
            raise StoreError(f"{self.dst}: {len(files)} shard(s) were never converted (e.g. {files[0]}); rerun the "
                             "same command", path=self.dst, expected="every shard", actual=files)
        digests: dict[str, str] = {k: v for k, v in self.digests.items() if v is not None}
        write_index(self.kv, self._plan, digests, self._source, self.ctx)
        return digests
