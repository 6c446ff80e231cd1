"""``fetch``'s side of the completion record (:mod:`grokweights.checkpoint.completion`).

Every selected file is recorded as incomplete before any of its data is written; a file is marked complete
only once libtorrent has verified all its pieces, the data has been flushed out of libtorrent's cache
(``flush_cache`` confirmed by its alert) and ``fsync``-ed. Updates happen every ``interval`` seconds
while downloading and once at the end, so an interrupted download never verifies as complete.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ..checkpoint.completion import CompletionRecord, read_record, record_path, write_record
from .select import TorrentFile

__all__ = ["Completion"]

logger = logging.getLogger(__name__)


def _fsync(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


class Completion:
    """The record of one download into ``dest``; written at once with every selected file incomplete."""

    def __init__(self, dest: Path, infohash: str, name: str, selected: list[TorrentFile], *,
                 interval: float = 30.0) -> None:
        self.dest, self.selected, self.interval = dest, list(selected), interval
        files: dict[str, tuple[int, bool]] = {}
        try:  # files of earlier runs that are not selected now keep their state
            files = dict(read_record(record_path(dest, infohash)).files)
        except (OSError, ValueError):
            pass
        files.update({f.path: (f.size, False) for f in self.selected})
        self.record = CompletionRecord(infohash, name, files)
        self.done: set[int] = set()
        self._last = time.monotonic()
        write_record(dest, self.record)

    def poll(self, run: Any) -> bool:
        """Update the record when due (for use inside a wait predicate); always False."""
        if time.monotonic() - self._last >= self.interval:
            self.update(run)
        return False

    def update(self, run: Any) -> None:
        """Mark complete the selected files whose every piece is verified, once flushed and fsync-ed."""
        self._last = time.monotonic()
        progress = run.handle.file_progress(flags=1)  # piece granularity: verified pieces only
        ready = [f for f in self.selected if f.index not in self.done and progress[f.index] >= f.size]
        if not ready:
            return
        if not run.flush():
            logger.warning("libtorrent did not confirm its cache flush; completion record not updated")
            return
        for f in ready:
            if _fsync(self.dest / f.path) or f.size == 0:
                self.done.add(f.index)
                self.record.files[f.path] = (f.size, True)
        write_record(self.dest, self.record)
