"""The export's output files, written past the page cache (``O_DIRECT``) where the file system allows it.

An export writes hundreds of gigabytes once and reads none of them back. Through the page cache every byte is
first copied by the kernel into fresh cache pages (on these machines the largest single cost of an export: it
ran at 0.5-0.7 GB/s, slower than the disk), and those pages then push out whatever the machine had cached.
Written with ``O_DIRECT`` the device reads the bytes straight from a few reused, page-aligned buffers.

:class:`OutputFile` takes a file whose first ``start`` bytes were already written (a header, through an ordinary
file object) and appends to it sequentially: bytes are gathered into one of two 16 MiB aligned buffers; a full
buffer is written at its aligned offset on an I/O thread while the other fills. The buffer that holds ``start``
begins at the aligned offset below it, with the bytes already there read back, so every direct write is aligned
in memory, offset and length. At :meth:`~OutputFile.close` the last whole blocks go out the same way, the tail
(under one block) through an ordinary write, and the file is ``fsync``-ed: an export is on the disk before it is
renamed into place.

Where ``O_DIRECT`` is refused (tmpfs, some network and FUSE file systems: ``EINVAL`` at open or at the first
write) the same bytes go through ordinary ``pwrite`` calls; ``GROKWEIGHTS_EXPORT_IO=buffered`` asks for that
everywhere.
"""

from __future__ import annotations

import errno
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

__all__ = ["OutputFile", "IO_ENV", "BUFFER_BYTES"]

#: ``buffered`` writes every export through the page cache (``direct``, the default, where the file system allows)
IO_ENV = "GROKWEIGHTS_EXPORT_IO"
#: each of the two gathering buffers (a multiple of every block size O_DIRECT asks for)
BUFFER_BYTES = 16 << 20
#: the alignment of direct writes: offsets, lengths and memory (a page: enough for every logical block size)
ALIGN = 4096
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


def _direct_wanted() -> bool:
    return hasattr(os, "O_DIRECT") and os.environ.get(IO_ENV, "").strip().lower() != "buffered"


class OutputFile:
    """Append to ``path`` from byte ``start`` on (the bytes before it already written and flushed).

    File-object-like for the export's writers: :meth:`write`, :meth:`tell`, :meth:`close`. :attr:`direct` says
    whether the bytes go past the page cache. Not thread-safe: one writer at a time (the I/O thread is its own).
    """

    def __init__(self, path: str | os.PathLike[str], start: int = 0) -> None:
        self.path = Path(path)
        self._closed = True  # until everything below is held
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        self._direct_fd = -1
        if _direct_wanted():
            try:
                self._direct_fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_DIRECT)
            except OSError as exc:
                if exc.errno not in _REFUSED:
                    os.close(self._fd)
                    raise
        self._maps = [mmap.mmap(-1, BUFFER_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) for _ in range(2)]
        self._bufs = [np.frombuffer(m, np.uint8) for m in self._maps]
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
            return os.preadv(fd, [memoryview(self._maps[0])[:self._fill]], self._base)
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
        view = memoryview(self._maps[self._cur])
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
        while len(view):
            if self._direct_fd >= 0 and len(view) % ALIGN == 0:
                try:
                    n = os.pwrite(self._direct_fd, view, offset)
                except OSError as exc:
                    if exc.errno not in _REFUSED:
                        raise
                    os.close(self._direct_fd)  # accepted at open, refused at write: ordinary writes from now on
                    self._direct_fd = -1
                    continue
            else:
                n = os.pwrite(self._fd, view, offset)
            if n <= 0:
                raise OSError(errno.EIO, f"wrote {n} bytes at offset {offset}", os.fspath(self.path))
            view, offset = view[n:], offset + n

    def close(self) -> None:
        """Write what is left, ``fsync`` and close (once; a failed write raises here or from :meth:`write`)."""
        if self._closed:
            return
        try:
            self._wait()
            view = memoryview(self._maps[self._cur])[:self._fill]
            whole = self._fill - self._fill % ALIGN
            self._write_at(view[:whole], self._base)
            self._write_at_buffered(view[whole:], self._base + whole)
            os.fsync(self._fd)
        finally:
            self.close_quietly()

    def _write_at_buffered(self, view: memoryview, offset: int) -> None:
        while len(view):
            n = os.pwrite(self._fd, view, offset)
            if n <= 0:
                raise OSError(errno.EIO, f"wrote {n} bytes at offset {offset}", os.fspath(self.path))
            view, offset = view[n:], offset + n

    def close_quietly(self) -> None:
        """Release everything without writing (after a failure; the caller removes the partial file)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        io = getattr(self, "_io", None)
        if io is not None:
            io.shutdown(wait=True)
        for fd in (self._fd, self._direct_fd):
            if fd >= 0:
                os.close(fd)
        self._bufs = []
        for m in self._maps:
            try:
                m.close()
            except BufferError:  # a view is still held (a failed write's traceback): unmapped when it goes
                pass

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.close_quietly()
