"""The release's pickle byte stream, encoded byte for byte (the parser is :mod:`.pickle_parse`).

Every official shard is one ``pickle.dump(obj, f, protocol=4)`` of a numpy array or of a
``QuantizedWeight8bit(weight=int8 array, scales=bfloat16 array)``. This module knows that stream at the
opcode level. :func:`encode` lays out the exact bytes CPython's pickler writes for such an object (frames, memo
  indices, large payloads outside frames), leaving the array payloads as slots to be streamed in, so a
  writer never builds a payload in memory and :func:`encoded_size` knows a shard's size without writing.

Stream of one float32 array (numpy 1.x spelling; numpy 2 writes ``numpy._core.multiarray``)::

    PROTO 4 | FRAME n | GLOBAL numpy.core.multiarray._reconstruct | (GLOBAL numpy.ndarray, (0,), b'b')
    REDUCE | (1, shape, dtype('f4') + state, False, BINBYTES <payload>) BUILD | STOP
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import ShardFormatError
from .pickle_desc import (
    DTYPE_CODES,
    NUMPY1_MODULE,
    QUANTIZED_CLASS,
    ArrayDesc,
    DType,
    QuantizedDesc,
    ShardDesc,
    as_dtype,
)

__all__ = ["encode", "encoded_size", "payload_sizes"]

_FRAME_SIZE_TARGET = 64 * 1024
_FRAME_SIZE_MIN = 4


# --------------------------------------------------------------------------------------------- encode


def _dtype_reduce(dtype: DType) -> tuple[object, tuple]:
    """The (argument, state) numpy's ``dtype.__reduce__`` gives for a shard dtype."""
    if dtype.name == "bfloat16":
        return ("ml_dtypes", "bfloat16"), (3, "<", None, None, None, 2, 2, 64)
    for code, known in DTYPE_CODES.items():
        if dtype.name == known.name:
            endian = "|" if dtype.itemsize == 1 else "<"
            return code, (3, endian, None, None, None, -1, -1, 0)
    raise ShardFormatError(f"dtype {dtype} cannot be written to a checkpoint shard",
                           expected=sorted(DTYPE_CODES) + ["bfloat16"], actual=str(dtype))


class _Global(tuple):
    """A (module, name) pair, pickled as a global reference."""


class _Encoder:
    """Mirror of CPython's protocol-4 pickler for the few object kinds a shard contains."""

    def __init__(self, numpy_module: str) -> None:
        self.numpy_module = numpy_module
        self.segments: list[bytes | int] = []  # bytes, or the index of a payload slot
        self.frame: list[bytes | int] = []  # the open frame's pieces
        self.frame_len = 0
        self.memo: dict[object, int] = {}
        self.sizes: list[int] = []  # payload sizes, by slot

    # framing -----------------------------------------------------------------------------------
    def commit_frame(self, force: bool = False) -> None:
        if self.frame_len and (self.frame_len >= _FRAME_SIZE_TARGET or force):
            if self.frame_len >= _FRAME_SIZE_MIN:
                self.segments.append(b"\x95" + struct.pack("<Q", self.frame_len))
            self.segments += self.frame
            self.frame, self.frame_len = [], 0

    def write(self, data: bytes) -> None:
        self.frame.append(data)
        self.frame_len += len(data)

    def memoize(self, key: object) -> None:
        self.memo[key] = len(self.memo)
        self.write(b"\x94")

    def get(self, key: object) -> bool:
        index = self.memo.get(key)
        if index is None:
            return False
        self.write(b"h" + struct.pack("<B", index) if index < 256 else b"j" + struct.pack("<I", index))
        return True

    # objects ----------------------------------------------------------------------------------------
    def save(self, obj: object) -> None:
        self.commit_frame()
        if obj is None:
            self.write(b"N")
        elif obj is True or obj is False:
            self.write(b"\x88" if obj else b"\x89")
        elif isinstance(obj, int):
            self.save_int(obj)
        elif isinstance(obj, _Global):
            self.save_global(obj)
        elif isinstance(obj, str):
            if not self.get(("str", obj)):
                data = obj.encode("utf-8")
                self.write(b"\x8c" + struct.pack("<B", len(data)) + data)
                self.memoize(("str", obj))
        elif isinstance(obj, bytes):
            if not self.get(("bytes", obj)):
                self.write(b"C" + struct.pack("<B", len(obj)) + obj)
                self.memoize(("bytes", obj))
        elif isinstance(obj, tuple):
            self.save_tuple(obj)
        elif isinstance(obj, (DType, np.dtype)):
            self.save_dtype(as_dtype(obj))
        elif isinstance(obj, ArrayDesc):
            self.save_array(obj)
        elif isinstance(obj, QuantizedDesc):
            self.save_quantized(obj)
        else:  # pragma: no cover - internal misuse
            raise TypeError(f"cannot encode {type(obj).__name__}")

    def save_int(self, value: int) -> None:
        if 0 <= value <= 0xFF:
            self.write(b"K" + struct.pack("<B", value))
        elif 0 <= value <= 0xFFFF:
            self.write(b"M" + struct.pack("<H", value))
        elif -(2**31) <= value < 2**31:
            self.write(b"J" + struct.pack("<i", value))
        else:
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.write(b"\x8a" + struct.pack("<B", len(data)) + data)

    def save_global(self, ref: _Global) -> None:
        if self.get(("global", ref)):
            return
        self.save(ref[0])
        self.save(ref[1])
        self.write(b"\x93")
        self.memoize(("global", ref))

    def save_tuple(self, items: tuple) -> None:
        if not items:
            self.write(b")")
            return
        if len(items) <= 3:
            for item in items:
                self.save(item)
            self.write(b"\x85\x86\x87"[len(items) - 1 : len(items)])
        else:
            self.write(b"(")
            for item in items:
                self.save(item)
            self.write(b"t")
        self.memoize(("tuple", id(items)))

    def save_payload(self, nbytes: int) -> None:
        if nbytes < 256:
            header = b"C" + struct.pack("<B", nbytes)
        elif nbytes <= 0xFFFFFFFF:
            header = b"B" + struct.pack("<I", nbytes)
        else:
            header = b"\x8e" + struct.pack("<Q", nbytes)
        slot = len(self.sizes)
        self.sizes.append(nbytes)
        if nbytes >= _FRAME_SIZE_TARGET:  # large bytes bypass the frame, header included
            self.commit_frame(force=True)
            self.segments += [header, slot]
        else:
            self.write(header)
            self.frame.append(slot)
            self.frame_len += nbytes
        self.memoize(("payload", slot))

    def save_dtype(self, dtype: DType) -> None:
        if self.get(("dtype", dtype.name)):
            return
        arg, state = _dtype_reduce(dtype)
        self.save(_Global(("numpy", "dtype")))
        self.save((_Global(arg) if isinstance(arg, tuple) else arg, False, True))
        self.write(b"R")
        self.memoize(("dtype", dtype.name))
        self.save(state)
        self.write(b"b")

    def save_array(self, desc: ArrayDesc) -> None:
        self.save(_Global((self.numpy_module, "_reconstruct")))
        self.save((_Global(("numpy", "ndarray")), (0,), b"b"))
        self.write(b"R")
        self.memoize(("array", id(desc)))
        # state: (1, shape, dtype, is_fortran, raw bytes)
        self.write(b"(")
        self.save(1)
        self.save(tuple(desc.shape))
        self.save(desc.dtype)
        self.save(False)
        self.commit_frame()  # the payload is one more save()
        self.save_payload(desc.nbytes)
        self.write(b"t")
        self.memoize(("state", id(desc)))
        self.write(b"b")

    def save_quantized(self, desc: QuantizedDesc) -> None:
        self.save(_Global(QUANTIZED_CLASS))
        self.save(())
        self.write(b"\x81")
        self.memoize(("object", id(desc)))
        self.commit_frame()  # the instance dict is one more save()
        self.write(b"}")
        self.memoize(("dict", id(desc)))
        self.write(b"(")
        for key, value in (("weight", desc.weight), ("scales", desc.scales)):
            self.save(key)
            self.save(value)
        self.write(b"u")
        self.write(b"b")


def encode(desc: ShardDesc, *, numpy_module: str = NUMPY1_MODULE) -> list[bytes | int]:
    """The byte stream of a shard holding ``desc``, with payload slots left open.

    Returns a list whose items are either ``bytes`` to write as they are, or an ``int`` slot number
    (0 = the array, or the weight; 1 = the scales) where that array's raw C-order bytes go.
    """
    encoder = _Encoder(numpy_module)
    encoder.segments.append(b"\x80\x04")
    encoder.save(desc)
    encoder.write(b".")
    encoder.commit_frame(force=True)
    # merge adjacent byte segments
    merged: list[bytes | int] = []
    for segment in encoder.segments:
        if isinstance(segment, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += segment
        elif not (isinstance(segment, bytes) and not segment):
            merged.append(segment)
    return merged


def encoded_size(desc: ShardDesc, *, numpy_module: str = NUMPY1_MODULE) -> int:
    """Exact size in bytes of the shard file holding ``desc``."""
    sizes = payload_sizes(desc)
    return sum(len(s) if isinstance(s, bytes) else sizes[s] for s in encode(desc, numpy_module=numpy_module))


def payload_sizes(desc: ShardDesc) -> list[int]:
    """Byte size of each payload slot of ``desc``, in slot order."""
    if isinstance(desc, QuantizedDesc):
        return [desc.weight.nbytes, desc.scales.nbytes]
    return [desc.nbytes]
