"""``reshard --follow``: convert the shards of a folder as copies arrive (``hf download``, rsync, a network FS).

The folder is polled every ``poll`` seconds. A shard is taken once its size is the manifest's and has not
changed (size and modification time) for ``settle`` seconds; the worker then checks its sha256 against the
manifest in the read that brings it into the page cache (a mismatch is re-read a few times, ``settle``
apart, before it fails) and converts it. The store's index is written once every shard of the plan is
converted, exactly as ``reshard`` writes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint.manifest import Manifest, find_local_manifest, load_manifest
from ..constants import CKPT_DIRNAME
from ..errors import StoreError
from ..store import StoreWrite
from .worker import open_worker

__all__ = ["follow", "FollowReport"]


@dataclass(frozen=True)
class FollowReport:
    """What ``reshard --follow`` did."""

    store: str
    arrays: int
    converted: tuple[str, ...]
    bytes_converted: int
    seconds: float
    sha256: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "arrays": self.arrays, "converted": list(self.converted),
                "bytes_converted": self.bytes_converted, "seconds": round(self.seconds, 3), "sha256": self.sha256}


def _root_of(src: Path) -> Path:
    """The folder holding ``ckpt-0`` (``src`` itself, or its parent when ``src`` is ``ckpt-0``)."""
    return src.parent if src.name == CKPT_DIRNAME else src


def _wait_manifest(root: Path, manifest: Any, deadline: float | None, poll: float) -> Manifest:
    """The manifest given, or the one beside ``ckpt-0`` once it has arrived."""
    if manifest is not None:
        return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    while True:
        try:
            found = find_local_manifest(root / CKPT_DIRNAME) if (root / CKPT_DIRNAME).is_dir() else None
        except Exception:  # still being copied
            found = None
        if found is not None:
            return found
        if deadline is not None and time.monotonic() > deadline:
            raise StoreError(f"{root}: no manifest arrived beside {CKPT_DIRNAME}/; pass --manifest",
                             path=str(root), expected="a manifest", actual=None)
        time.sleep(poll)


def follow(src: str | os.PathLike[str], dst: str | os.PathLike[str], mesh: Any, *, manifest: Any = None,
           rules: Any = "grok1", layers: Any = None, compression: str = "none", dtype: str = "keep",
           jobs: int | None = None, sync: bool = True, poll: float = 1.0, settle: float = 2.0,
           timeout: float | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
           progress: Callable[[int], None] | None = None) -> FollowReport:
    """Reshard the checkpoint arriving in ``src`` into ``dst``, shard by shard as each one is complete.

    Args:
        src: the folder that holds (or will hold) ``ckpt-0/``.
        manifest: a Manifest, manifest file or shipped name (default: the one beside ``ckpt-0``, awaited).
        poll: seconds between looks at the folder.
        settle: seconds a shard's size and modification time must stay unchanged before it is read.
        timeout: give up after this many seconds without a new complete shard (None: wait forever).
        Others: as for :func:`grokweights.store.reshard.reshard`.

    Raises:
        StoreError: nothing new for ``timeout`` seconds; VerificationError: a shard that stays wrong.
    """
    started = time.monotonic()
    root = _root_of(Path(src))
    emit = on_event or (lambda event: None)
    manifest = _wait_manifest(root, manifest, None if timeout is None else started + timeout, poll)
    with StoreWrite(dst, jobs=jobs, sync=sync, progress=progress) as write:
        worker = open_worker(root, write, mesh, manifest=manifest, rules=rules, dtype=dtype, compression=compression,
                             layers=layers, on_event=emit, retry_delay=settle, require_sha256=True).start()
        try:
            _watch(worker, Path(worker.ckpt), poll=poll, settle=settle, timeout=timeout, emit=emit)
        except BaseException:
            worker.stop()
            raise
        digests = worker.finish()
    return FollowReport(os.fspath(dst), len(digests), tuple(worker.sha256), worker.bytes_converted,
                        time.monotonic() - started, dict(worker.sha256))


def _watch(worker: Any, ckpt: Path, *, poll: float, settle: float, timeout: float | None,
           emit: Callable[[dict[str, Any]], None]) -> None:
    """Submit each shard once it is settled; return when every shard of the plan was submitted."""
    seen: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, since)
    waiting = [name for name in worker.entries if not worker.done(name)]
    last_new = time.monotonic()
    while waiting:
        if worker.error is not None:
            raise worker.error
        now = time.monotonic()
        for name in list(waiting):
            try:
                st = os.stat(ckpt / name)
            except FileNotFoundError:
                continue
            mark = (st.st_size, st.st_mtime_ns)
            if seen.get(name, (None, None, 0.0))[:2] != mark:
                seen[name] = (*mark, now)
            elif st.st_size == worker.entries[name].size and now - seen[name][2] >= settle:
                worker.submit(name)
                waiting.remove(name)
                last_new = now
                emit({"event": "shard_arrived", "time": round(time.time(), 3), "shard": name, "bytes": st.st_size,
                      "waiting": len(waiting)})
        if timeout is not None and now - last_new > timeout:
            raise StoreError(f"{ckpt}: no shard completed in {timeout:g} s; {len(waiting)} still missing (e.g. "
                             f"{waiting[0]})", path=str(ckpt), expected=len(worker.entries), actual=waiting)
        if waiting:
            time.sleep(poll)
