"""The conversion worker: shards in (as they become complete), store arrays out, the index last.

A :class:`ConversionWorker` owns one store being written for one plan. Shards are handed to it by file
name (``tensor00000_000``) as they become complete, from any thread (:meth:`ConversionWorker.submit`); a
single worker thread takes them in order, checks each one (size, and sha256 against the manifest where it
has one: one sequential read that also brings the shard into the page cache), then writes every array of
that shard with :class:`grokweights.store.writer.ArrayWriter` from the cached pages and waits until
they are durable and published. Only then may the source shard be deleted (``discard``). When every
array of the plan is complete, :meth:`ConversionWorker.finish` writes the store index with
:func:`grokweights.store.reshard.write_index`: the store is then the one ``reshard`` of the same
checkpoint writes, byte for byte (but the index's timestamp).

An array is trusted only through :func:`grokweights.store.writer.completed` (its published record names
the plan and the source's identity), so a worker killed at any moment leaves either complete arrays, or
unpublished chunks that the next run overwrites.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..checkpoint.hashing import sha256_file
from ..constants import CKPT_DIRNAME
from ..errors import StoreError, VerificationError
from ..sharding.plan import ArrayPlan, ReshardPlan
from ..store import kv as tskv
from ..store.reshard import existing_index, plan_for_checkpoint, unpublish, write_index
from ..store.specs import kvstore_spec
from ..store.writer import ArrayWriter, completed, source_identity

__all__ = ["ConversionWorker", "shard_entries"]

logger = logging.getLogger(__name__)

Event = Callable[[dict[str, Any]], None]


def shard_entries(manifest: Any, plan: ReshardPlan) -> dict[str, Any]:
    """``{file name: manifest ShardEntry}`` for every shard the plan reads, in plan order."""
    files = dict.fromkeys(a.source_file for a in plan.arrays)
    return {f: manifest.shard(f"{CKPT_DIRNAME}/{f}") for f in files}


def open_worker(root: str | os.PathLike[str], dst: str | os.PathLike[str], mesh: Any, *, manifest: Any,
                rules: Any = "grok1", dtype: str = "keep", compression: str = "none", layers: Any = None,
                **worker: Any) -> ConversionWorker:
    """A worker for the checkpoint that is (or will be) at ``root/ckpt-0``, planned exactly as ``reshard`` plans it.

    Raises:
        StoreError: ``dst`` already holds the index of a store for another plan.
    """
    os.makedirs(os.path.join(root, CKPT_DIRNAME), exist_ok=True)
    ckpt, manifest, plan = plan_for_checkpoint(root, mesh, rules=rules, dtype=dtype, compression=compression,
                                               layers=layers, manifest=manifest)
    converter = ConversionWorker(plan, manifest, ckpt, dst, **worker)
    existing = existing_index(dst, plan, converter.ctx)  # an older or damaged index is rewritten, as by reshard
    if converter.remaining or existing is None:  # unfinished again until every array is proven complete
        unpublish(converter.kv, converter.ctx)
    return converter


def _identity(name: str, ckpt: str, entry: Any) -> dict[str, Any]:
    """The source identity ``reshard`` records for shard ``name`` (its size from the manifest once deleted)."""
    if os.path.isfile(os.path.join(ckpt, name)) and os.path.getsize(os.path.join(ckpt, name)) == entry.size:
        return source_identity(name, ckpt, entry.sha256)
    return {"file": name, "size": entry.size, "sha256": entry.sha256}


class ConversionWorker:
    """Convert shards into the store ``dst`` for ``plan`` as they are submitted; a context manager.

    Args:
        plan: the reshard plan (from :func:`grokweights.store.reshard.plan_for_checkpoint` or the same call of
            :func:`grokweights.sharding.plan.plan_reshard`).
        manifest: the manifest the plan was made from (sizes, sha256 where known, the index's source).
        ckpt: the ``ckpt-0`` folder the shards arrive in.
        dst: the store (local path or tensorstore URL).
        discard: delete each source shard once its arrays are durable.
        on_discard: called with the file name after a shard was deleted (e.g. to stop seeding it).
        on_event: called with one dict per event (``converted``, ``conversion``, ``discarded``, ...).
        progress: called with bytes of arrays written.
        retries: how often a shard whose sha256 does not match is re-read (its writer may still be flushing).
    """

    def __init__(self, plan: ReshardPlan, manifest: Any, ckpt: str | os.PathLike[str], dst: str | os.PathLike[str],
                 *, discard: bool = False, sync: bool = True, jobs: int | None = None,
                 on_discard: Callable[[str], None] | None = None, on_event: Event | None = None,
                 progress: Callable[[int], None] | None = None, retries: int = 5, retry_delay: float = 0.5) -> None:
        self.plan, self.manifest, self.ckpt, self.dst = plan, manifest, os.fspath(ckpt), dst
        self.discard, self.sync = discard, sync
        self.on_discard = on_discard or (lambda name: None)
        self.on_event = on_event or (lambda event: None)
        self.progress = progress or (lambda n: None)
        self.retries, self.retry_delay = retries, retry_delay
        self.kv = kvstore_spec(dst)
        self.ctx = tskv.context(jobs=jobs or os.cpu_count(), sync=False)  # durability: one syncfs per array
        self.entries = shard_entries(manifest, plan)
        self.arrays: dict[str, list[ArrayPlan]] = {f: [] for f in self.entries}
        for array in plan.arrays:
            self.arrays[array.source_file].append(array)
        self.sources = {f: _identity(f, self.ckpt, e) for f, e in self.entries.items()}
        self.digests: dict[str, str | None] = {
            a.store_path: completed(a, self.kv, self.ctx, self.sources[a.source_file]) for a in plan.arrays}
        self.sha256: dict[str, str] = {}
        self.bytes_converted = 0
        #: source bytes of the shards handled so far (converted, or found converted)
        self.bytes_source_done = 0
        self.seconds = 0.0
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._seen: set[str] = set()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="convert", daemon=True)
        self._started = False

    # ------------------------------------------------------------------------------------- state

    def done(self, name: str) -> bool:
        """Whether every array of shard ``name`` is complete in the store."""
        return all(self.digests[a.store_path] is not None for a in self.arrays.get(name, ()))

    @property
    def remaining(self) -> list[str]:
        """Shards with an array still to write, in plan order."""
        return [f for f in self.entries if not self.done(f)]

    def bytes_to_write(self) -> int:
        """Store bytes still to write (before compression)."""
        return sum(a.nbytes for a in self.plan.arrays if self.digests[a.store_path] is None)

    @property
    def error(self) -> BaseException | None:
        return self._error

    # ------------------------------------------------------------------------------------- feeding

    def start(self) -> ConversionWorker:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def submit(self, name: str) -> bool:
        """Queue shard ``name`` (a file name in ``ckpt``) once; False when it is not the plan's or already queued."""
        if name not in self.entries or name in self._seen:
            return False
        self._seen.add(name)
        self._queue.put(name)
        return True

    def __enter__(self) -> ConversionWorker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Let the worker finish the shard in hand and end (for interruptions)."""
        self._queue.put(None)
        if self._started:
            self._thread.join()

    def finish(self) -> dict[str, str]:
        """Wait for every queued shard, check every array is complete, write the index; every sha256.

        Raises:
            the worker's error, or :class:`StoreError` naming shards never converted.
        """
        self.stop()
        if self._error is not None:
            raise self._error
        missing = self.remaining
        if missing:
            raise StoreError(f"{self.dst}: {len(missing)} shard(s) were never converted (e.g. {missing[0]}); rerun "
                             "the same command", path=os.fspath(self.dst), expected="every shard",
                             actual=missing)
        write_index(self.kv, self.plan, dict(self.digests), self.manifest, self.ctx)  # type: ignore[arg-type]
        self.on_event({"event": "indexed", "store": os.fspath(self.dst), "arrays": len(self.digests)})
        return dict(self.digests)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------- working

    def _main(self) -> None:
        try:
            with ArrayWriter(self.kv, self.ctx, sync=self.sync, progress=self._progress) as writer:
                while (name := self._queue.get()) is not None:
                    self._convert(writer, name)
        except BaseException as exc:  # handed to the feeding thread by finish()
            self._error = exc
            logger.debug("conversion stopped: %s", exc)

    def _progress(self, n: int) -> None:
        self.bytes_converted += n
        self.progress(n)

    def _convert(self, writer: ArrayWriter, name: str) -> None:
        """Check shard ``name``, write its arrays not yet complete, wait until they are durable, discard it."""
        todo = [a for a in self.arrays[name] if self.digests[a.store_path] is None]
        path = os.path.join(self.ckpt, name)
        if todo:
            start = time.perf_counter()
            self.sha256[name] = self._check(name, path)
            for array in todo:
                self.digests[array.store_path] = writer.write(array, self.ckpt, self.sources[name])
            writer.wait()  # every array of this shard is durable and published
            self.seconds += time.perf_counter() - start
            self.on_event({"event": "converted", "shard": name, "arrays": len(todo),
                           "bytes": sum(a.nbytes for a in todo), "sha256": self.sha256[name],
                           "seconds": round(time.perf_counter() - start, 3),
                           "remaining": len(self.remaining)})
        self.bytes_source_done += self.entries[name].size
        if self.discard and os.path.exists(path):
            os.unlink(path)
            self.on_discard(name)
            self.on_event({"event": "discarded", "shard": name})

    def _check(self, name: str, path: str) -> str:
        """The shard's sha256 after checking its size and (where the manifest has it) its sha256."""
        entry = self.entries[name]
        for attempt in range(self.retries + 1):
            size = os.path.getsize(path)
            if size != entry.size:
                raise VerificationError(f"{path}: size {size:,} bytes, the manifest says {entry.size:,}",
                                        path=path, expected=entry.size, actual=size)
            digest = sha256_file(path)
            if entry.sha256 is None or digest == entry.sha256:
                return digest
            if attempt < self.retries:
                time.sleep(self.retry_delay * (attempt + 1))
        raise VerificationError(f"{path}: sha256 {digest}, the manifest says {entry.sha256}; not converted",
                                path=path, expected=entry.sha256, actual=digest)

