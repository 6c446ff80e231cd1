"""The conversion worker: shards in (as they become complete), store arrays out, the index last.

A :class:`ConversionWorker` owns one store being written for one plan. Shards are handed to it by file
name (``tensor00000_000``) as they become complete, from any thread (:meth:`ConversionWorker.submit`); a
single worker thread takes them in order, checks each one (size, and sha256 against the manifest where it
has one: one sequential read that also brings the shard into the page cache), then writes every array of
that shard through the store's :class:`grokweights.store.StoreWrite` (``write_shard``: from the cached
pages, durable and published when it returns). Only then may the source shard be deleted (``discard``).
When every array of the plan is complete, :meth:`ConversionWorker.finish` ends the store write (the index
last): the store is then the one ``reshard`` of the same checkpoint writes, byte for byte (but the index's
timestamp).

An array is trusted only once the store write proved it complete (its published record names the plan and
the source's identity, and every chunk it recorded is there), so a worker killed at any moment leaves either
complete arrays, or unpublished chunks that the next run overwrites.
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
from ..errors import VerificationError
from ..sharding.plan import ReshardPlan
from ..store import StoreWrite, manifest_identity, plan_for_checkpoint, source_identity

__all__ = ["ConversionWorker", "shard_entries"]

logger = logging.getLogger(__name__)

Event = Callable[[dict[str, Any]], None]


def shard_entries(manifest: Any, plan: ReshardPlan) -> dict[str, Any]:
    """``{file name: manifest ShardEntry}`` for every shard the plan reads, in plan order."""
    files = dict.fromkeys(a.source_file for a in plan.arrays)
    return {f: manifest.shard(f"{CKPT_DIRNAME}/{f}") for f in files}


def open_worker(root: str | os.PathLike[str], write: StoreWrite, mesh: Any, *, manifest: Any,
                rules: Any = "grok1", dtype: str = "keep", compression: str = "none", layers: Any = None,
                require_sha256: bool = False, **worker: Any) -> ConversionWorker:
    """A worker for the checkpoint that is (or will be) at ``root/ckpt-0``, planned exactly as ``reshard`` plans it,
    writing through ``write`` (a :class:`StoreWrite` whose lock is held; it is begun here).

    ``require_sha256``: refuse a manifest without the sha256 of every shard the plan reads (before anything is
    written): where nothing else proves a shard complete (``reshard --follow``), a settled size is not enough.

    Raises:
        StoreError: the store already holds the index of a store for another plan.
        VerificationError: ``require_sha256`` and a shard without a sha256.
    """
    os.makedirs(os.path.join(root, CKPT_DIRNAME), exist_ok=True)
    ckpt, manifest, plan = plan_for_checkpoint(root, mesh, rules=rules, dtype=dtype, compression=compression,
                                               layers=layers, manifest=manifest)
    entries = shard_entries(manifest, plan)
    unhashed = [f for f, e in entries.items() if e.sha256 is None]
    if require_sha256 and unhashed:
        raise VerificationError(
            f"manifest {manifest.name!r} has no sha256 for {len(unhashed)} shard(s) (e.g. "
            f"{CKPT_DIRNAME}/{unhashed[0]}): --follow cannot tell a complete shard from one still being written "
            "(a copier may preallocate it); pin "
            "the hashes first (`grokweights manifest pin --from-torrent FILE` or `--from-hub`), or run `grokweights "
            "reshard` once the copy has finished", path=manifest.name, expected="a sha256 per shard",
            actual=f"{len(unhashed)} without")
    write.begin(plan, sources={f: _identity(f, ckpt, e) for f, e in entries.items()},
                manifest=manifest_identity(manifest))
    return ConversionWorker(write, manifest, ckpt, **worker)


def _identity(name: str, ckpt: str, entry: Any) -> dict[str, Any]:
    """The source identity ``reshard`` records for shard ``name`` (its size from the manifest once deleted)."""
    if os.path.isfile(os.path.join(ckpt, name)) and os.path.getsize(os.path.join(ckpt, name)) == entry.size:
        return source_identity(name, ckpt, entry.sha256)
    return {"file": name, "size": entry.size, "sha256": entry.sha256}


class ConversionWorker:
    """Convert shards into a store as they are submitted; a context manager.

    Args:
        write: the store write (begun with the plan: :func:`open_worker`).
        manifest: the manifest the plan was made from (sizes, sha256 where known).
        ckpt: the ``ckpt-0`` folder the shards arrive in.
        discard: delete each source shard once its arrays are durable.
        on_discard: called with the file name after a shard was deleted (e.g. to stop seeding it).
        on_event: called with one dict per event (``converted``, ``conversion``, ``discarded``, ...).
        retries: how often a shard whose sha256 does not match is re-read (its writer may still be flushing).
    """

    def __init__(self, write: StoreWrite, manifest: Any, ckpt: str | os.PathLike[str], *, discard: bool = False,
                 on_discard: Callable[[str], None] | None = None, on_event: Event | None = None,
                 retries: int = 5, retry_delay: float = 0.5) -> None:
        self.write, self.manifest, self.ckpt = write, manifest, os.fspath(ckpt)
        self.plan: ReshardPlan = write.plan  # type: ignore[assignment]
        self.dst, self.discard = write.dst, discard
        self.on_discard = on_discard or (lambda name: None)
        self.on_event = on_event or (lambda event: None)
        self.retries, self.retry_delay = retries, retry_delay
        self.entries = shard_entries(manifest, self.plan)
        self.sha256: dict[str, str] = {}
        #: source bytes of the shards handled so far (converted, or found converted)
        self.bytes_source_done = 0
        self.seconds = 0.0
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._seen: set[str] = set()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="convert", daemon=True)
        self._started = False

    # ------------------------------------------------------------------------------------- state

    @property
    def digests(self) -> dict[str, str | None]:
        return self.write.digests

    @property
    def bytes_converted(self) -> int:
        """Bytes of arrays written so far."""
        return self.write.bytes_written

    def done(self, name: str) -> bool:
        """Whether every array of shard ``name`` is complete in the store."""
        return self.write.done(name)

    @property
    def remaining(self) -> list[str]:
        """Shards with an array still to write, in plan order."""
        return [f for f in self.entries if not self.done(f)]

    def bytes_to_write(self) -> int:
        """Store bytes still to write (before compression)."""
        return self.write.bytes_to_write()

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
        digests = self.write.finish()
        self.on_event({"event": "indexed", "store": os.fspath(self.dst), "arrays": len(digests)})
        return digests

    # ------------------------------------------------------------------------------------- working

    def _main(self) -> None:
        try:
            while (name := self._queue.get()) is not None:
                self._convert(name)
        except BaseException as exc:  # handed to the feeding thread by finish()
            self._error = exc
            logger.debug("conversion stopped: %s", exc)

    def _convert(self, name: str) -> None:
        """Check shard ``name``, write its arrays not yet complete, wait until they are durable, discard it."""
        path = os.path.join(self.ckpt, name)
        if not self.done(name):
            start = time.perf_counter()
            self.sha256[name] = self._check(name, path)
            todo = self.write.write_shard(name, self.ckpt)  # every array of this shard durable and published
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

