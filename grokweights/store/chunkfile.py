"""One chunk of an uncompressed store array on a local disk: read into place and written, crc32c in hardware.

The chunk's bytes (C order, little-endian) are followed by their crc32c (4 bytes, little-endian): zarr v3's
``bytes`` codec followed by its ``crc32c`` codec, what tensorstore and zarr-python read and write. Reading moves
each byte once, from the page cache (or disk) into the destination, in pieces small enough that the checksum
runs over bytes still in the CPU's cache; writing checksums the bytes it is handed and writes them with one
``pwritev``. The checksum is the ``crc32c`` package's (SSE 4.2 / ARMv8 instructions where the CPU has them,
about 10 GB/s a core; it takes any buffer, so nothing is copied to be checked).

Every way a chunk can be wrong is a :class:`ChunkFault` (cause, detail); :func:`chunk_error` turns it into the
one-line :class:`~grokweights.errors.StoreError` that tensorstore's refusals also become.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import struct
import threading

import crc32c as _crc32c
import numpy as np

from .._directio import ALIGN, REFUSED, aligned_buffer, is_aligned, open_direct, pwrite_all
from ..checkpoint.files import file_kind
from ..errors import StoreError
from .chunks import CRC_BYTES

__all__ = ["ChunkFault", "chunk_error", "checksum", "check_place", "populate", "read_verified", "write_chunk",
           "encode", "trailer_of", "scratch", "HARDWARE", "PIECE_BYTES", "MOVED"]

#: bytes read (and checksummed) per step: the checksum then runs over bytes still in cache
PIECE_BYTES = 1 << 20
#: whether the crc32c implementation uses CPU instructions (else portable code, ~10x slower)
HARDWARE: bool = bool(getattr(_crc32c, "hardware_based", False))
#: the cause of a chunk whose checksum is valid but is not the one recorded for its position
MOVED = "is not the chunk written at this position (moved, or from another array or store)"
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


_SCRATCH = threading.local()


def scratch(nbytes: int) -> np.ndarray:
    """This thread's reusable chunk buffer, at least ``nbytes``, page-aligned (a direct write takes it as it is;
    its pages stay mapped: no fresh-page faults)."""
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _SCRATCH.buf = aligned_buffer(nbytes)
    return buf[:nbytes]


_MADV_POPULATE_WRITE = 23  # Linux 5.14+
_LIBC: object = None


def populate(address: int, nbytes: int) -> None:
    """Fault in the whole pages of ``[address, address + nbytes)`` in one call (``MADV_POPULATE_WRITE``).

    Fresh pages of an anonymous mapping are otherwise faulted in one trap per page by the copy that fills them;
    populating a piece just before it is read costs less kernel time, and the zeroed pages are still in cache
    when the copy writes them. Pages already present are left as they are; where the kernel lacks the call,
    nothing happens.
    """
    global _LIBC
    if _LIBC is False:
        return
    if _LIBC is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            _LIBC = libc
        except (OSError, AttributeError):
            _LIBC = False
            return
    start = -(-address // mmap.PAGESIZE) * mmap.PAGESIZE
    stop = (address + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if stop > start and _LIBC.madvise(start, stop - start, _MADV_POPULATE_WRITE) != 0 \
            and ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS):  # an older kernel: stop asking
        _LIBC = False


def checksum(data: object, value: int = 0) -> int:
    """crc32c of ``data`` (any contiguous buffer), continuing from ``value``."""
    return _crc32c.crc32c(data, value)


class ChunkFault(Exception):
    """A chunk that cannot be used: ``cause`` (``is missing``, ``is truncated``, ...) and a short ``detail``."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause} ({detail})")
        self.cause, self.detail = cause, detail


def chunk_error(location: str, store_path: str, chunk: str, cause: str, detail: str) -> StoreError:
    """The one-line error for a bad chunk of ``store_path`` in the store at ``location``, naming the fix."""
    where = f"{location.rstrip('/')}/{store_path}"
    return StoreError(f"{where}: chunk {chunk} {cause} ({detail}); the store is damaged: delete {where} and rerun "
                      f"`grokweights reshard` into the store (`grokweights verify {location}` lists every damaged "
                      "array)", path=where, actual=chunk)


def _open(path: str) -> int:
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ChunkFault("is missing", "NOT_FOUND: no such chunk file") from None
    except OSError as exc:
        raise ChunkFault("cannot be read", exc.strerror or errno.errorcode.get(exc.errno or 0, "error")) from None
    return fd


def read_verified(path: str, dest: memoryview, expected: int | None = None, *, fresh: bool = False) -> int:
    """Read the chunk at ``path`` into ``dest`` (exactly its data bytes), checking its checksum; returns it.

    The checksum must equal the file's trailer (the bytes are intact) and, when given, ``expected`` (the value
    recorded for this chunk's position when the array was written: the chunk is the one that belongs here).
    ``fresh``: ``dest`` is fresh memory; each piece's pages are faulted in just before it is read (:func:`populate`).

    Raises:
        ChunkFault: missing, not a regular file, truncated or too long, corrupt, or moved.
    """
    size = dest.nbytes
    fd = _open(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ChunkFault(f"is {file_kind(st.st_mode)}, not a regular file", "replaced")
        if st.st_size < size + CRC_BYTES:
            raise ChunkFault("is truncated", f"Not enough data: {st.st_size} bytes, expected {size + CRC_BYTES}")
        if st.st_size > size + CRC_BYTES:
            raise ChunkFault("is corrupt", f"DATA_LOSS: {st.st_size} bytes, expected {size + CRC_BYTES}")
        value, offset, trailer = 0, 0, bytearray(CRC_BYTES)
        base = np.frombuffer(dest, np.uint8).ctypes.data if fresh and size else 0
        while offset < size:
            piece = dest[offset:offset + PIECE_BYTES]
            if base:
                populate(base + offset, piece.nbytes)
            last = offset + piece.nbytes >= size
            got = os.preadv(fd, [piece, trailer] if last else [piece], offset)
            if got < piece.nbytes + (CRC_BYTES if last else 0):
                raise ChunkFault("is truncated", f"Not enough data: the file shrank while being read ({path})")
            value = checksum(piece, value)
            offset += piece.nbytes
        if size == 0 and os.preadv(fd, [trailer], 0) < CRC_BYTES:
            raise ChunkFault("is truncated", "Not enough data: no checksum")
    finally:
        os.close(fd)
    (recorded,) = struct.unpack("<I", trailer)
    if value != recorded:
        raise ChunkFault("is corrupt (crc32c mismatch)",
                         f"Digest mismatch: computed {value:08x}, stored {recorded:08x}")
    check_place(value, expected)
    return value


def check_place(value: int, expected: int | None) -> None:
    """A chunk carrying checksum ``value`` is the one written at its position (``expected``, from the chunk table).

    Raises:
        ChunkFault: it is not (moved, or from another array or store).
    """
    if expected is not None and value != expected:
        raise ChunkFault(MOVED, f"its crc32c {value:08x} is not the {expected:08x} recorded for this position")


def trailer_of(path: str) -> int:
    """The checksum a chunk file carries (its last 4 bytes), without reading the rest.

    Raises:
        ChunkFault: missing, not a regular file, or shorter than a checksum.
    """
    fd = _open(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ChunkFault(f"is {file_kind(st.st_mode)}, not a regular file", "replaced")
        raw = os.pread(fd, CRC_BYTES, max(0, st.st_size - CRC_BYTES)) if st.st_size >= CRC_BYTES else b""
    finally:
        os.close(fd)
    if len(raw) < CRC_BYTES:
        raise ChunkFault("is truncated", f"Not enough data: {len(raw)} bytes")
    return struct.unpack("<I", raw)[0]


def encode(data: memoryview) -> tuple[int, bytes]:
    """``(crc32c, trailer)`` of a chunk's bytes."""
    value = checksum(data)
    return value, struct.pack("<I", value)


def write_chunk(path: str, data: memoryview) -> int:
    """Write one chunk file (its bytes, then their crc32c) at ``path``, creating folders; returns the crc32c.

    The file is written in place (``O_TRUNC``): the array is unpublished while its chunks are written, so no
    reader trusts a chunk until the array's ``zarr.json`` is published after every chunk is durable. Its whole
    blocks go past the page cache where the file system allows (:mod:`grokweights._directio`; bytes at an
    unaligned address are first copied into this thread's aligned buffer), the rest and the trailer through an
    ordinary ``pwritev``.
    """
    value, trailer = encode(data)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, flags, 0o644)
    try:
        head = _write_direct(path, data)
        total, offset = data.nbytes + CRC_BYTES, head
        buffers = [data, memoryview(trailer)]
        while offset < total:  # pwritev may write less than asked (signals, RLIMIT_FSIZE): continue where it stopped
            written = os.pwritev(fd, _tail(buffers, offset), offset)
            if written <= 0:
                raise OSError(errno.EIO, f"{path}: short write")
            offset += written
    finally:
        os.close(fd)
    return value


def _write_direct(path: str, data: memoryview) -> int:
    """Write the whole blocks at the start of ``data`` past the page cache; returns how many bytes (0: none)."""
    head = data.nbytes - data.nbytes % ALIGN
    if not head:
        return 0
    fd = open_direct(path)
    if fd < 0:
        return 0
    try:
        block = np.frombuffer(data, np.uint8, count=head)
        if not is_aligned(block):
            aligned = scratch(head)
            np.copyto(aligned, block)
            block = aligned
        pwrite_all(fd, memoryview(block), 0, path)
        return head
    except OSError as exc:
        if exc.errno in REFUSED:  # taken at open, refused at the write: all through the ordinary write
            return 0
        raise
    finally:
        os.close(fd)


def _tail(buffers: list[memoryview], offset: int) -> list[memoryview]:
    out = []
    for buf in buffers:
        if offset >= buf.nbytes:
            offset -= buf.nbytes
            continue
        out.append(buf[offset:])
        offset = 0
    return out
