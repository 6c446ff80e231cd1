"""``fetch --hub R --hub-sha256-only``: a dead swarm without metadata, downloaded from the hub by its sha256 alone.

Only when the user asks for it: without the torrent's metadata no piece can be checked, so each shard is
checked by its exact size (the manifest's) and the sha256 of the hub's LFS object (``X-Linked-Etag``, and
the manifest's own sha256 where it has one). The report and the local manifest say so: each hash is pinned
as ``hub:<repo>@<commit>`` alone, to be cross-checked against the torrent once its metadata is found
(``grokweights verify DIR --torrent FILE``).

Files are written as ``DEST/<manifest name>/ckpt-0/…``. A shard is downloaded into
``DEST/.grokweights/hub-partial/`` and renamed into place only once its size and sha256 are right; after
an interruption (even ``kill -9``) the partial file is hashed again and continued with a ``Range`` request.
Shards already checked are recorded in ``DEST/.grokweights/hub-<commit>.done`` (size, mtime, sha256).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .._atomic import write_atomic
from ..checkpoint.completion import STATE_DIR
from ..constants import LOCAL_MANIFEST_NAME
from ..errors import TorrentError, UsageError
from .hubhttp import HubHTTPError, open_url
from .offline import manifest_table
from .report import FetchReport, FetchVerification
from .select import TorrentFile, preflight, select_files

__all__ = ["fetch_by_hub_sha256"]

logger = logging.getLogger(__name__)

_BLOCK = 1024 * 1024
_TRIES = 8


class _Pace:
    """Progress, events every second, the download rate limit and the stall limit of one download."""

    def __init__(self, job: Any, total: int) -> None:
        self.options, self.total = job.options, total
        self.done = self.fetched = 0
        self.started = self._tick = self._moved = time.monotonic()
        if self.options.progress is not None and hasattr(self.options.progress, "reset"):
            self.options.progress.reset(total=total)

    def add(self, n: int, fetched: bool = True) -> None:
        self.done += n
        self.fetched += n if fetched else 0
        self._moved = time.monotonic()
        if self.options.progress is not None:
            self.options.progress.update(n)
        rate = self.options.max_download_rate
        if rate and fetched:  # sleep until the average rate is back under the limit
            time.sleep(max(0.0, self.fetched / rate - (time.monotonic() - self.started)))
        self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        if self.options.stall_timeout is not None and now - self._moved > self.options.stall_timeout:
            raise TorrentError(f"hub: no progress for {self.options.stall_timeout:g} s ({self.done:,} bytes done)",
                               expected="progress", actual=self.done)
        if now - self._tick >= 1.0 and self.options.on_event is not None:
            self._tick = now
            self.options.on_event({"event": "progress", "time": round(time.time(), 3), "state": "downloading",
                                   "done": self.done, "wanted": self.total, "downloaded": self.fetched,
                                   "hub_bytes": self.fetched, "peer_bytes": 0, "hash_failures": 0})


def _hash_existing(path: Path, hasher: Any) -> int:
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            hasher.update(block)
            size += len(block)
    return size


def _download(job: Any, shard: str, size: int, target: Path, part: Path, pace: _Pace) -> tuple[str, str]:
    """Download one shard into ``part`` (continuing it), check it, rename it to ``target``; (sha256, commit)."""
    hub = job.hub
    part.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    have = _hash_existing(part, hasher) if part.is_file() else 0
    pace.add(have, fetched=False)
    tries, info = 0, None
    while have < size:
        headers = {"Range": f"bytes={have}-"}
        try:
            resp, got = open_url(hub.ref.url(shard, hub.commit), path=shard, headers=headers, token=hub.token)
            info = got or info
            with resp, open(part, "ab") as out:
                if resp.status != 206:
                    raise TorrentError(f"hub {shard}: the hub ignored Range (HTTP {resp.status})", path=shard)
                while block := resp.read(_BLOCK):
                    out.write(block)
                    hasher.update(block)
                    have += len(block)
                    pace.add(len(block))
                out.flush()
                os.fsync(out.fileno())
        except (HubHTTPError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:  # not disk errors
            transient = getattr(exc, "transient", True)
            tries += 1
            if not transient or tries >= _TRIES:
                raise TorrentError(f"hub {shard}: {exc}", path=shard) from None
            wait = getattr(exc, "retry_after", None) or min(60.0, 2.0 ** tries)
            logger.warning("hub %s: %s; retrying in %.0f s", shard, exc, wait)
            time.sleep(wait)
    if info is None:  # continued from a complete partial file: one HEAD for the facts
        resp, info = open_url(hub.ref.url(shard, hub.commit), path=shard, method="HEAD", token=hub.token)
        resp.close()
    digest = hasher.hexdigest()
    expected = info.sha256 if info is not None else None
    if have != size or expected is None or digest != expected:
        part.unlink(missing_ok=True)  # a wrong copy is never kept: the next run starts the file again
        why = (f"{have:,} bytes, the manifest says {size:,}" if have != size else
               "the hub lists no LFS sha256 for it" if expected is None else
               f"sha256 {digest}, the hub's is {expected}")
        raise TorrentError(f"hub {shard}: {why}; not kept", path=shard, expected=expected or size, actual=digest)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    return digest, info.commit or hub.commit or ""


def fetch_by_hub_sha256(job: Any) -> FetchReport:
    """Download the selected shards of the job's manifest from the hub, checked by sha256 (see the module)."""
    manifest, hub = job.source.manifest, job.hub
    if job.options.on_run is not None or job.options.on_selected is not None:
        raise UsageError("--hub-sha256-only downloads without the torrent, so nothing can be converted as it "
                         "lands: drop --reshard, then run `grokweights reshard` on the download",
                         expected="no --reshard", actual="--reshard")
    if manifest is None:
        raise TorrentError("--hub-sha256-only needs a manifest (the shards and their sizes): fetch from a "
                           "manifest name (grok-1) or give --manifest", expected="a manifest", actual="none")
    top = manifest.name
    files = [TorrentFile(f.index, f"{top}/{f.path}", f.size, f.shard, top) for f in manifest_table(manifest)]
    options = job.options
    selected = select_files(files, include=options.include, layers=options.layers, manifest=manifest)
    needed, free = preflight(job.dest, selected, free=options.free_space)
    if options.on_event is not None:
        options.on_event({"event": "selected", "time": round(time.time(), 3), "files": len(selected),
                          "total_files": len(files), "bytes": sum(f.size for f in selected), "needed": needed,
                          "free": free, "torrent": None, "provenance": "hub-sha256-only"})
    expected = {s.path: s.sha256 for s in manifest.shards}
    hub.commit = hub.resolve_commit_of(selected[0].shard) if selected else None
    state = job.dest / STATE_DIR
    record_path = state / f"hub-{hub.commit or hub.ref.revision}.done"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    pace, pins, problems = _Pace(job, sum(f.size for f in selected)), {}, []
    started = time.monotonic()
    for f in selected:
        target = job.dest / f.path
        st = target.stat() if target.is_file() else None
        known = record.get(f.shard)
        if st is not None and known and [st.st_size, st.st_mtime_ns] == known[:2]:
            pins[f.shard] = known[2]
            pace.add(f.size, fetched=False)
            continue
        try:
            digest, _ = _download(job, f.shard, f.size, target, state / "hub-partial" / f.path, pace)
        except TorrentError as exc:
            problems.append({"path": f.path, "status": "failed", "expected": exc.expected, "actual": str(exc)})
            continue
        if expected.get(f.shard) not in (None, digest):
            problems.append({"path": f.path, "status": "sha256_differs", "expected": expected[f.shard],
                             "actual": digest})
            continue
        pins[f.shard] = digest
        st = target.stat()
        record[f.shard] = [st.st_size, st.st_mtime_ns, digest]
        write_atomic(record_path, json.dumps(record, indent=0), fsync=True)
    from ..checkpoint.manifest import with_hashes

    local = job.dest / top / LOCAL_MANIFEST_NAME
    local.parent.mkdir(parents=True, exist_ok=True)
    with_hashes(manifest, pins, source=hub.source).save(local)
    verification = FetchVerification(checked=len(selected), problems=tuple(problems))
    note = ("checked by the hub's sha256 alone, not by the torrent's pieces (no metadata): cross-check with "
            f"grokweights verify {job.dest / top} --torrent FILE once the .torrent is found")
    return FetchReport(
        source=job.source.text, name=top, infohash=job.state.infohash, dest=str(job.dest), torrent="",
        checkpoint=str(job.dest / top), manifest=str(local), files=tuple(f.to_dict() for f in selected),
        total_files=len(files), selected_bytes=pace.total, needed_bytes=needed, free_bytes=free,
        resumed_bytes=pace.done - pace.fetched, downloaded_bytes=pace.fetched, seconds=time.monotonic() - started,
        verification=verification, ok=verification.ok,
        extra={"provenance": "hub-sha256-only", "note": note,
               "hub": {"repo": hub.ref.repo, "revision": hub.ref.revision, "commit": hub.commit,
                       "hub_bytes": pace.fetched, "peer_bytes": 0, "sha256_pinned": len(pins)}})
