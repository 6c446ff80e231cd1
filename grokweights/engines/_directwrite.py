"""The export's output files, written past the page cache (``O_DIRECT``) where the file system allows it.

:class:`OutputFile` takes a file whose first ``start`` bytes were already written (a header, through an ordinary
file object) and appends to it sequentially: bytes are gathered into one of two 16 MiB aligned buffers; a full
buffer is written at its aligned offset on an I/O thread while the other fills. The buffer that holds ``start``
begins at the aligned offset below it, with the bytes already there read back, so every direct write is aligned
in memory, offset and length. At :meth:`~OutputFile.close` the last whole blocks go out the same way, the tail
(under one block) through an ordinary write, and the file is ``fsync``-ed: an export is on the disk before it is
renamed into place. Why, and the fallbacks (a file system that refuses ``O_DIRECT``,
``GROKWEIGHTS_WRITE_IO=buffered``): :mod:`grokweights._directio`.
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .._directio import ALIGN, REFUSED, aligned_buffer, open_direct, pwrite_all

__all__ = ["OutputFile", "BUFFER_BYTES"]

#: each of the two gathering buffers (a multiple of every block size O_DIRECT asks for)
BUFFER_BYTES = 16 << 20


class OutputFile:
    """Append to ``path`` from byte ``start`` on (the bytes before it already written and flushed).

    File-object-like for the export's writers: :meth:`write`, :meth:`tell`, :meth:`close`. :attr:`direct` says
    whether the bytes go past the page cache. Not thread-safe: one writer at a time (the I/O thread is its own).
    """

    def __init__(self, path: str | os.PathLike[str], start: int = 0) -> None:
        self.path = Path(path)
        self._closed = True  # until everything below is held
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            self._direct_fd = open_direct(self.path)
        except OSError:
            os.close(self._fd)
            raise
        self._bufs = [aligned_buffer(BUFFER_BYTES) for _ in range(2)]
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grokweights-export-io")
        self._pending: Future | None = None
        self._closed = False
        self._cur = 0
        self._base = start - start % ALIGN  # the file offset of the current buffer's first byte
        self._fill = start - self._base
        if self._fill and self._read_back() != self._fill:  # the bytes already there: the first write is aligned
            self.close_quietly()
            raise OSError(errno.EIO, f"short read of the {start - self._base} bytes before offset {start}",
                          os.fspath(self.path))

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> OutputFile:
        """A new, empty file at ``path`` (an existing one is truncated)."""
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))
        return cls(path)

    @property
    def direct(self) -> bool:
        """Whether the bytes go past the page cache (O_DIRECT)."""
        return self._direct_fd >= 0

    def _read_back(self) -> int:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.preadv(fd, [memoryview(self._bufs[0])[:self._fill]], self._base)
        finally:
            os.close(fd)

    def tell(self) -> int:
        """The offset of the next byte written."""
        return self._base + self._fill

    def write(self, data) -> int:
        """Append ``data`` (bytes or a C-contiguous array); returns its length in bytes."""
        src = np.frombuffer(memoryview(data).cast("B"), np.uint8)
        done, total = 0, src.nbytes
        while done < total:
            take = min(total - done, BUFFER_BYTES - self._fill)
            np.copyto(self._bufs[self._cur][self._fill:self._fill + take], src[done:done + take])
            self._fill += take
            done += take
            if self._fill == BUFFER_BYTES:
                self._hand_off()
        return total

    def _hand_off(self) -> None:
        """Write the full current buffer on the I/O thread and go on in the other one."""
        self._wait()
        view = memoryview(self._bufs[self._cur])
        self._pending = self._io.submit(self._write_at, view, self._base)
        self._cur ^= 1
        self._base += BUFFER_BYTES
        self._fill = 0

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write_at(self, view: memoryview, offset: int) -> None:
        """Write ``view`` (aligned when direct) at ``offset``; a file system that refuses it falls back."""
        if self._direct_fd >= 0 and len(view) % ALIGN == 0:
            try:
                pwrite_all(self._direct_fd, view, offset, self.path)
                return
            except OSError as exc:
                if exc.errno not in REFUSED:
                    raise
                os.close(self._direct_fd)  # accepted at open, refused at write: ordinary writes from now on
                self._direct_fd = -1
        pwrite_all(self._fd, view, offset, self.path)

    def close(self) -> None:
        """Write what is left, ``fsync`` and close (once; a failed write raises here or from :meth:`write`)."""
        if self._closed:
            return
        try:
            self._wait()
            view = memoryview(self._bufs[self._cur])[:self._fill]
            whole = self._fill - self._fill % ALIGN
            self._write_at(view[:whole], self._base)
            pwrite_all(self._fd, view[whole:], self._base + whole, self.path)
            os.fsync(self._fd)
        finally:
            self.close_quietly()

    def close_quietly(self) -> None:
        """Release everything without writing (after a failure; the caller removes the partial file)."""
        if self._closed:
            return
        self._closed = True
        self._io.shutdown(wait=True)
        for fd in (self._fd, self._direct_fd):
            if fd >= 0:
                os.close(fd)
        self._bufs = []  # the buffers' pages go with the last view of them

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.close_quietly()
