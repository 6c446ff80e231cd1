"""``fetch --reshard``: download by BitTorrent and convert each shard into the store as soon as it is complete.

The download is :func:`grokweights.torrent.fetch` unchanged, with three hooks: the selection (shards whose
arrays are already complete are not fetched again once their source was discarded; the free-space check
counts the store and the shards in flight), the running torrent (file priorities and sequential pieces so
shards complete one by one; uploads off when shards are discarded) and its events: each
``file_completed`` (libtorrent raises it only after every piece of the file passed its hash) queues the
shard for a :class:`~grokweights.stream.worker.ConversionWorker` running beside the download. Files found
complete when a download resumes raise no event; they are found by polling the per-file progress once a
second. The store's index is written after the download, once every array is durable.

The store is the one ``reshard`` of the finished download writes (but the index's timestamp): the same
plan (:func:`grokweights.store.reshard.plan_for_checkpoint` of the same manifest), the same writer, the
same index. Interrupted at any moment, the same call again completes it, downloading only what is missing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._space import free_space, gib, require_space
from ..checkpoint.manifest import load_manifest
from ..constants import LOCAL_MANIFEST_NAME
from ..errors import UsageError
from ..store import StoreWrite
from ..torrent import progressive as tp
from ..torrent.fetch import FetchOptions, FetchReport, fetch
from ..torrent.meta import resolve_source
from ..torrent.select import TorrentFile, checkpoint_root
from .worker import ConversionWorker, open_worker

__all__ = ["fetch_and_reshard", "StreamReport"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamReport:
    """What ``fetch --reshard`` did: the fetch's report, and the conversion's."""

    fetch: FetchReport
    store: str
    arrays: int
    converted: tuple[str, ...] = ()
    discarded: tuple[str, ...] = ()
    bytes_converted: int = 0
    convert_seconds: float = 0.0
    seconds: float = 0.0
    sha256: dict[str, str] = field(default_factory=dict)
    ok: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"fetch": self.fetch.to_dict(), "store": self.store, "arrays": self.arrays,
                "converted": list(self.converted), "discarded": list(self.discarded),
                "bytes_converted": self.bytes_converted, "convert_seconds": round(self.convert_seconds, 3),
                "seconds": round(self.seconds, 3), "sha256": self.sha256, "ok": self.ok}


class _Stream:
    """The state shared by the fetch hooks (main thread) and the worker (its own thread)."""

    def __init__(self, dest: Path, store: str, source: Any, options: FetchOptions, target: dict[str, Any],
                 discard: bool, progress: Callable[[int], None] | None) -> None:
        self.dest, self.store, self.source, self.options = dest, store, source, options
        self.target, self.discard, self.progress = target, discard, progress
        self.worker: ConversionWorker | None = None
        self.store_write: StoreWrite | None = None
        self.run: Any = None
        self.files: dict[int, TorrentFile] = {}
        self.selected: list[TorrentFile] = []
        self.root: Path | None = None
        self.complete: set[int] = set()
        self.flushing: dict[int, int] = {}  # file index -> flushes confirmed when its flush was asked for
        self.discarded: list[str] = []
        self.paused = False
        self.in_flight = 0
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- events

    def emit(self, event: dict[str, Any]) -> None:
        """One event to the caller's sink (the worker's thread and the download's thread both emit)."""
        if self.options.on_event is not None:
            with self._lock:
                self.options.on_event(event)

    def worker_event(self, event: dict[str, Any]) -> None:
        self.emit({"time": round(time.time(), 3), **event})

    def on_event(self, event: dict[str, Any]) -> None:
        self.emit(event)
        if self.worker is not None and self.worker.error is not None:
            raise self.worker.error
        if event["event"] == "file_completed":
            self._flush_then(event["index"])
        elif event["event"] == "progress" and self.run is not None:
            for index in tp.complete_files(self.run.handle):
                self._flush_then(index)
        self._flushed()
        if event["event"] == "progress" and self.run is not None:
            self._pace()
            if self.worker is not None:
                self.emit({"event": "conversion", "time": event["time"], "converted": self.worker.bytes_converted,
                           "to_convert": self.worker.bytes_to_write() + self.worker.bytes_converted,
                           "remaining_shards": len(self.worker.remaining)})

    def _flush_then(self, index: int) -> None:
        """Ask libtorrent to write out its buffers; the file is taken once that flush is confirmed."""
        if index in self.complete or index in self.flushing or self.run is None:
            if self.run is None:
                self._completed(index)
            return
        self.flushing[index] = self.run.flushes
        tp.flush(self.run.handle)

    def _flushed(self) -> None:
        if self.run is None:
            return
        for index, before in list(self.flushing.items()):
            if self.run.flushes > before:
                del self.flushing[index]
                self._completed(index)

    def _completed(self, index: int) -> None:
        if index in self.complete or index not in self.files:
            return
        f = self.files[index]
        if f.shard is None and Path(f.path).name == LOCAL_MANIFEST_NAME and self.worker is None:
            self._start_local()
            if self.worker is None:
                return  # not yet written out by libtorrent: taken at the next poll
        self.complete.add(index)
        self._submit_complete()

    def _submit_complete(self) -> None:
        if self.worker is None:
            return
        for index in sorted(self.complete):
            f = self.files[index]
            if f.shard is not None and self.worker.submit(Path(f.shard).name):
                self.in_flight += f.size

    def _pace(self) -> None:
        """With discarded sources, pause the download while the shards waiting for conversion exceed the budget."""
        if not self.discard or self.worker is None:
            return
        waiting = self.in_flight - self.worker.bytes_source_done
        budget = self.budget()
        if not self.paused and waiting > budget:
            self.paused, self.run.stall_timeout = True, None
            tp.pause(self.run.handle)
            self.emit({"event": "paused", "time": round(time.time(), 3), "waiting": waiting, "budget": budget})
        elif self.paused and waiting <= budget // 2:
            self.paused, self.run.stall_timeout = False, self.options.stall_timeout
            tp.resume(self.run.handle)

    def budget(self) -> int:
        """Source bytes allowed on disk at once with ``discard``: the two largest shards still to convert."""
        sizes = sorted((self.worker.entries[f].size for f in self.worker.remaining), reverse=True) if self.worker \
            else []
        return max(sum(sizes[:2]), 64 << 20)

    # ---------------------------------------------------------------------------------------- hooks

    def _start_worker(self, manifest: Any) -> None:
        self.worker = open_worker(self.root, self.store_write, manifest=manifest, discard=self.discard,
                                  on_discard=self._dropped, on_event=self.worker_event, **self.target).start()
        self.emit({"event": "conversion_started", "time": round(time.time(), 3), "store": self.store,
                   "arrays": len(self.worker.plan.arrays), "complete": len(self.worker.plan.arrays)
                   - sum(1 for d in self.worker.digests.values() if d is None)})

    def _dropped(self, name: str) -> None:
        self.discarded.append(name)
        for f in self.files.values():
            if f.shard is not None and Path(f.shard).name == name and self.run is not None:
                tp.drop_file(self.run.handle, f.index)

    def on_selected(self, files: list[TorrentFile], selected: list[TorrentFile]) -> list[TorrentFile]:
        """Start the worker when a manifest is at hand, leave out discarded shards already converted, preflight."""
        self.files = {f.index: f for f in files}
        root = checkpoint_root(files)
        if root is None:
            raise UsageError("--reshard: the torrent holds no ckpt-0/ shards", expected="ckpt-0/tensor*",
                             actual=[f.path for f in files[:3]])
        self.root = self.dest / root
        if self.source.manifest is None and not any(Path(f.path).name == LOCAL_MANIFEST_NAME for f in files):
            raise UsageError("--reshard needs a manifest (the model's layout and the shards' sha256): fetch from a "
                             "manifest name (e.g. grok-1) or pass --manifest", expected="a manifest", actual=None)
        self._start_local()  # a rerun: the manifest kept beside ckpt-0 by the previous run
        if self.worker is not None:
            wanted = set(self.worker.entries)
            selected = [f for f in selected if f.shard is None or (Path(f.shard).name in wanted and not (
                self.discard and self.worker.done(Path(f.shard).name) and not (self.dest / f.path).exists()))]
        self.selected = selected
        self._preflight(selected)
        return selected

    def _start_local(self) -> None:
        """Start the worker with the manifest beside ``ckpt-0`` (what ``reshard`` of the download reads), if there."""
        manifest = _try_manifest(self.root / LOCAL_MANIFEST_NAME)
        if manifest is not None and self.worker is None:
            self._start_worker(manifest)

    def on_run(self, run: Any) -> None:
        self.run = run
        self._start_local()  # fetch has just written the source's manifest there, unless the torrent carries one
        order = [f"ckpt-0/{name}" for name in self.worker.entries] if self.worker is not None else []
        tp.progressive(run.handle, self.selected, order)
        if self.discard:
            tp.stop_uploading(run.session)

    def _preflight(self, selected: list[TorrentFile]) -> None:
        """Room for the store still to write and the source: all of it, or (discarding) the shards in flight."""
        shard_bytes = sum(f.size for f in selected if f.shard is not None and not (self.dest / f.path).exists())
        # without the manifest yet (it comes with the torrent), the store is about the size of the shards
        store_bytes = self.worker.bytes_to_write() if self.worker is not None else shard_bytes
        source_bytes = min(shard_bytes, self.budget()) if self.discard else shard_bytes
        store_path = self.store_write.local if self.store_write is not None else None
        measure = self.options.free_space or free_space
        same = store_path is None or _device(store_path) == _device(self.dest)
        self.emit({"event": "preflight", "time": round(time.time(), 3), "store_bytes": store_bytes,
                   "source_bytes": source_bytes, "discard_source": self.discard, "free": measure(self.dest)})
        source = f"the source {gib(source_bytes)}{' in flight' if self.discard else ''}"
        hint = "free space or choose another destination" + ("" if self.discard else
                                                            "; --discard-source needs only the shards in flight")
        if same and store_path is not None:
            require_space(self.dest, source_bytes + store_bytes, measure=measure, hint=hint,
                          what=f"(the store {gib(store_bytes)} more and {source})")
            return
        require_space(self.dest, source_bytes, measure=measure, hint=hint, what=f"({source})")
        if store_path is not None:
            require_space(store_path, store_bytes, measure=measure, what=f"(the store {gib(store_bytes)} more)")


def _device(path: str | os.PathLike[str]) -> int:
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    return probe.stat().st_dev


def _try_manifest(path: Path) -> Any:
    try:
        return load_manifest(path)
    except Exception:  # a partial download of the manifest file: wait for it to complete
        return None


def fetch_and_reshard(source: str | os.PathLike[str], dest: str | os.PathLike[str], store: str | os.PathLike[str],
                      mesh: Any, *, rules: Any = "grok1", layers: str | None = None, compression: str = "none",
                      dtype: str = "keep", discard_source: bool = False, sync: bool = True, jobs: int | None = None,
                      convert_progress: Callable[[int], None] | None = None, options: FetchOptions | None = None,
                      **overrides: Any) -> StreamReport:
    """Fetch ``source`` into ``dest`` by BitTorrent and reshard it into ``store`` in the same pass.

    Args:
        source, dest, options, overrides: as for :func:`grokweights.torrent.fetch` (``layers`` selects both
            the files fetched and the layers stored).
        store: the store to write (a local path or tensorstore URL).
        mesh, rules, compression, dtype: as for :func:`grokweights.store.reshard.reshard`.
        discard_source: delete each shard once its arrays are durable (peak disk: the store plus the shards in
            flight); such a download does not upload.
        convert_progress: called with bytes of arrays written.

    Returns:
        A :class:`StreamReport`; ``ok`` when the download completed and every array and the index are written.
    """
    options = replace(options or FetchOptions(), **overrides)
    if discard_source and options.seeding:
        raise UsageError("--discard-source deletes the shards as they are converted: it cannot --seed them",
                         expected="no --seed", actual="--seed")
    dest = Path(dest).resolve()
    src = resolve_source(source, manifest=options.manifest)
    target = {"mesh": mesh, "rules": rules, "layers": layers, "compression": compression, "dtype": dtype}
    stream = _Stream(dest, os.fspath(store), src, options, target, discard_source, convert_progress)
    started = time.monotonic()
    # the store write (its lock held for the whole download; tensorstore loaded now: a pause in the selection
    # hook, while peers wait, makes them drop us)
    with StoreWrite(store, jobs=jobs, sync=sync, progress=convert_progress) as write:
        stream.store_write = write
        try:
            report = fetch(source, dest, replace(options, layers=layers, verify=False, check_space=False,
                                                 on_selected=stream.on_selected, on_run=stream.on_run,
                                                 on_event=stream.on_event))
        except BaseException:
            if stream.worker is not None:
                stream.worker.stop()
            raise
        return _finish(stream, report, started)


def _finish(stream: _Stream, report: FetchReport, started: float) -> StreamReport:
    """After the download: queue what is complete and not yet queued, wait for the worker, write the index."""
    worker = stream.worker
    if report.dry_run:  # what would be fetched; nothing converted
        if worker is not None:
            worker.stop()
        return StreamReport(fetch=report, store=stream.store, arrays=0, seconds=time.monotonic() - started,
                            ok=report.ok)
    if worker is None:
        stream._start_worker(load_manifest(stream.root / LOCAL_MANIFEST_NAME))
        worker = stream.worker
    stream.complete.update(f.index for f in stream.selected if (stream.dest / f.path).is_file())
    stream._submit_complete()
    digests = worker.finish()
    return StreamReport(fetch=report, store=stream.store, arrays=len(digests),
                        converted=tuple(worker.sha256), discarded=tuple(stream.discarded),
                        bytes_converted=worker.bytes_converted, convert_seconds=worker.seconds,
                        seconds=time.monotonic() - started, sha256=dict(worker.sha256), ok=report.ok)
