"""The completion record of a download: which of its files are complete, readable without libtorrent.

BitTorrent writes files sparse and at full size from the start, so an interrupted download looks whole to
a size check, and a manifest without sha256 (the shipped ``grok-1`` one) cannot tell. ``fetch`` therefore
keeps, beside the lock and resume data, one record per torrent::

    DEST/.grokweights/<infohash>.complete     JSON, replaced atomically
    {"format": "grokweights-completion", "version": 1, "infohash": "...", "name": "<torrent name>",
     "files": {"<torrent path>": {"size": N, "complete": true|false}, ...}}

Torrent paths are relative to DEST (``grok-1/ckpt-0/tensor00000_000``). ``fetch`` writes every selected
file as incomplete before any data is written, then marks a file complete only once libtorrent has
verified all its pieces, its data has been flushed out of libtorrent's cache and ``fsync``-ed.

Lookup (:func:`incomplete_shards`): for a checkpoint whose ``ckpt-0/`` is in ROOT, every
``.grokweights/*.complete`` in ROOT or any folder above it is read; each file it lists that lies in
ROOT and is not complete is reported. ``fetch --dest DIR`` puts its record in ``DIR/.grokweights/`` and
the data in ``DIR/<torrent name>/``, so ``verify DIR/<name>`` (or ``DIR/<name>/ckpt-0``) finds it. A
checkpoint no record lists is judged by size and hashes alone, as before; a record that cannot be read
makes every shard below its folder incomplete (never silently complete).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import write_atomic
from .files import open_regular

__all__ = ["STATE_DIR", "RECORD_SUFFIX", "CompletionRecord", "record_path", "read_record", "write_record",
           "incomplete_shards", "incomplete_reason"]

#: the hidden folder of a download's bookkeeping (lock, resume data, completion record).
STATE_DIR = ".grokweights"
RECORD_SUFFIX = ".complete"
FORMAT = "grokweights-completion"
#: a record larger than this is not read (a 770-file release's record is about 60 kB).
MAX_RECORD_BYTES = 16 * 1024 * 1024


@dataclass
class CompletionRecord:
    """What a record says: ``files`` maps a torrent path (relative to DEST) to ``(size, complete)``."""

    infohash: str
    name: str = ""
    files: dict[str, tuple[int, bool]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "infohash": self.infohash, "name": self.name,
                "files": {p: {"size": s, "complete": c} for p, (s, c) in sorted(self.files.items())}}


def record_path(dest: str | os.PathLike[str], infohash: str) -> Path:
    """``DEST/.grokweights/<infohash>.complete``."""
    return Path(dest) / STATE_DIR / f"{infohash}{RECORD_SUFFIX}"


def write_record(dest: str | os.PathLike[str], record: CompletionRecord) -> Path:
    """Write the record atomically and durably (temporary file, fsync, rename)."""
    path = record_path(dest, record.infohash)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, json.dumps(record.to_dict(), indent=1), fsync=True)


def read_record(path: str | os.PathLike[str]) -> CompletionRecord:
    """Read one record.

    Raises:
        ValueError: the file is not a readable completion record (too large, not JSON, wrong shape).
        OSError: it cannot be opened, or is not a regular file (:class:`NotRegularFileError`).
    """
    with open_regular(path, what="completion record", fix="re-run the fetch that wrote it") as f:  # not a FIFO
        data = f.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes")
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("files"), dict):
        raise ValueError(f"not a {FORMAT} record")
    files = {}
    for rel, entry in raw["files"].items():
        size, complete = (entry.get("size"), entry.get("complete")) if isinstance(entry, dict) else (None, None)
        if not isinstance(size, int) or isinstance(size, bool) or not isinstance(complete, bool):
            raise ValueError(f"bad entry for {str(rel)[:100]!r}")
        files[rel] = (size, complete)
    return CompletionRecord(str(raw.get("infohash", "")), str(raw.get("name", "")), files)


def _records(root: Path) -> list[tuple[Path, Path]]:
    """``(record file, the folder its paths are relative to)`` in ROOT and every folder above it."""
    found = []
    for base in (root, *root.parents):
        try:
            found += [(p, base) for p in sorted((base / STATE_DIR).glob(f"*{RECORD_SUFFIX}"))]
        except OSError:
            continue
    return found


def incomplete_shards(root: str | os.PathLike[str]) -> dict[str, str]:
    """Files below ROOT (relative POSIX paths, e.g. ``ckpt-0/tensor00000_000``) that a download's completion
    record lists as not complete, each with a one-line reason; ``"*"`` when a record below which ROOT lies
    cannot be read (then nothing under ROOT is complete)."""
    root = Path(root).resolve()
    out: dict[str, str] = {}
    for path, base in _records(root):
        try:
            record = read_record(path)
        except (OSError, ValueError) as exc:
            out["*"] = f"completion record {path} is unreadable ({exc}); re-run the fetch that wrote it"
            continue
        for rel, (_size, complete) in record.files.items():
            try:
                inside = (base / rel).resolve().relative_to(root).as_posix()
            except (ValueError, OSError):
                continue
            if not complete:
                out.setdefault(inside, f"the download into {base} has not completed this file (record {path}); "
                                       "re-run the same fetch to finish it")
    return out


def incomplete_reason(unfinished: dict[str, str], path: str) -> str | None:
    """Why ``path`` (relative to ROOT) is not complete according to :func:`incomplete_shards`, or None."""
    return unfinished.get(path) or unfinished.get("*")
