"""Parse a shard's pickle stream without ``pickle.load``: an allow-listed pickle machine.

Only the opcodes and globals the release uses are accepted (see ``docs/format.md``); payloads are not
read, only located, so a caller can memory-map them. Anything else raises an error naming the file and
the byte offset, and nothing from the file is ever executed.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import ShardFormatError, UnsafePickleError
from .pickle_desc import (
    BFLOAT16,
    DTYPE_CODES,
    NUMPY1_MODULE,
    NUMPY2_MODULE,
    QUANTIZED_CLASS,
    ArrayDesc,
    ParsedArray,
    ParsedShard,
    PayloadRef,
    as_dtype,
)
from .pickle_limits import MAX_MARKS, MAX_MEMO, MAX_OPS, MAX_STACK, Budget, shape_problem, summary

__all__ = ["PayloadRef", "ParsedArray", "ParsedShard", "parse"]

@dataclass(frozen=True)
class _Bytes:
    """A bytes object of the stream: where it lies, and its value when small (the b'b' type code)."""

    ref: PayloadRef
    data: bytes | None

    def summary(self) -> str:
        return f"<{self.ref.nbytes} bytes at byte {self.ref.offset}>"


class _Ref:
    """A global the allow-list resolved, or an object under construction."""

    def __init__(self, what: str, value: object = None) -> None:
        self.what = what
        self.value = value

    def summary(self) -> str:
        return f"<{self.what}>"


_ALLOWED_GLOBALS = {
    (NUMPY1_MODULE, "_reconstruct"): "reconstruct",
    (NUMPY2_MODULE, "_reconstruct"): "reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("ml_dtypes", "bfloat16"): "bfloat16",
    QUANTIZED_CLASS: "quantized",
}

_SMALL_BYTES = 64  # bytes objects up to this size are read into memory (the b'b' type code)


class _Parser:
    def __init__(self, f: BinaryIO, path: str, size: int) -> None:
        self.f = f
        self.path = path
        self.size = size
        self.stack: list[object] = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}
        self.modules: set[str] = set()
        self.arrays: list[ParsedArray] = []
        self.budget = Budget(lambda message: self.fail(message, unsafe=True))

    def fail(self, message: str, *, unsafe: bool = False, expected: object = None, actual: object = None):
        where = self.f.tell()
        cls = UnsafePickleError if unsafe else ShardFormatError
        hint = ("; refusing to load it (the release's shards only use numpy arrays and QuantizedWeight8bit)"
                if unsafe else "; the file is damaged or not a Grok-1 shard: re-fetch it")
        raise cls(f"{self.path}: {message} (at byte {where}){hint}", path=self.path, expected=expected,
                  actual=actual)

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            self.fail(f"truncated stream: needed {n} more bytes, file ends at {self.size}",
                      expected=n, actual=len(data))
        return data

    def pop_mark(self) -> list[object]:
        if not self.marks:
            self.fail("malformed stream: no MARK on the stack")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def pop(self) -> object:
        if not self.stack or (self.marks and len(self.stack) <= self.marks[-1]):
            self.fail("malformed stream: stack underflow")
        return self.stack.pop()

    def bytes_ref(self, n: int) -> _Bytes:
        offset = self.f.tell()
        if offset + n > self.size:
            self.fail(f"truncated payload: {n} bytes announced at byte {offset}, file ends at {self.size}",
                      expected=offset + n, actual=self.size)
        if n <= _SMALL_BYTES:
            return _Bytes(PayloadRef(offset, n), self.read(n))
        self.f.seek(n, io.SEEK_CUR)
        return _Bytes(PayloadRef(offset, n), None)

    def run(self) -> object:
        ops = _OPS
        for _ in range(MAX_OPS):
            if len(self.stack) > MAX_STACK or len(self.marks) > MAX_MARKS or len(self.memo) > MAX_MEMO:
                self.fail(f"more than {MAX_STACK} objects on the stack, {MAX_MARKS} marks or {MAX_MEMO} memo "
                          "entries (a shard's header needs a few dozen)", unsafe=True)
            code = self.f.read(1)
            if not code:
                self.fail("truncated stream: no STOP opcode before the end of the file")
            handler = ops.get(code)
            if handler is None:
                self.fail(f"opcode {code!r} is not allowed in a checkpoint shard", unsafe=True, actual=code)
            if handler(self) is _STOP:
                return self.pop()
        self.fail(f"more than {MAX_OPS} opcodes (a shard's header has about 50)", unsafe=True)


_STOP = object()


def _op_proto(p: _Parser) -> None:
    version = p.read(1)[0]
    if not 2 <= version <= 5:
        p.fail(f"pickle protocol {version} is not supported", expected="2..5", actual=version)


def _op_frame(p: _Parser) -> None:
    (length,) = struct.unpack("<Q", p.read(8))
    if p.f.tell() + length > p.size:
        p.fail(f"truncated stream: frame of {length} bytes runs past the end of the file",
               expected=p.f.tell() + length, actual=p.size)


def _op_memoize(p: _Parser) -> None:
    if not p.stack:
        p.fail("malformed stream: MEMOIZE on an empty stack")
    p.memo[len(p.memo)] = p.stack[-1]


def _op_put(width: str):
    def op(p: _Parser) -> None:
        (index,) = struct.unpack(width, p.read(struct.calcsize(width)))
        p.memo[index] = p.stack[-1] if p.stack else p.fail("malformed stream: PUT on an empty stack")
    return op


def _op_get(width: str):
    def op(p: _Parser) -> None:
        (index,) = struct.unpack(width, p.read(struct.calcsize(width)))
        if index not in p.memo:
            p.fail(f"malformed stream: memo entry {index} read before it was written")
        p.stack.append(p.memo[index])
    return op


def _op_unicode(width: str):
    def op(p: _Parser) -> None:
        (n,) = struct.unpack(width, p.read(struct.calcsize(width)))
        if n > 4096:
            p.fail(f"string of {n} bytes is longer than any in a shard", actual=n)
        try:
            p.stack.append(p.read(n).decode("utf-8"))
        except UnicodeDecodeError:
            p.fail("malformed stream: string is not UTF-8")
    return op


def _op_bytes(width: str):
    def op(p: _Parser) -> None:
        (n,) = struct.unpack(width, p.read(struct.calcsize(width)))
        p.stack.append(p.bytes_ref(n))
    return op


def _op_int(width: str):
    def op(p: _Parser) -> None:
        p.stack.append(struct.unpack(width, p.read(struct.calcsize(width)))[0])
    return op


def _op_long1(p: _Parser) -> None:
    n = p.read(1)[0]
    p.stack.append(int.from_bytes(p.read(n), "little", signed=True))


def _op_const(value: object):
    def op(p: _Parser) -> None:
        p.stack.append(value)
    return op


def _op_mark(p: _Parser) -> None:
    p.marks.append(len(p.stack))


def _op_tuple(p: _Parser) -> None:
    p.stack.append(p.budget.tuple(p.pop_mark()))


def _op_tuple_n(n: int):
    def op(p: _Parser) -> None:
        items = [p.pop() for _ in range(n)][::-1]
        p.stack.append(p.budget.tuple(items))
    return op


def _op_empty_dict(p: _Parser) -> None:
    p.stack.append(p.budget.new_dict())


def _set_items(p: _Parser, items: list[object]) -> None:
    if len(items) % 2:
        p.fail("malformed stream: odd number of items in SETITEMS")
    target = p.pop()
    if not isinstance(target, dict):
        p.fail("malformed stream: SETITEMS on something that is not a dict")
    for key in items[::2]:
        if not isinstance(key, str):
            p.fail(f"dict key {summary(key)} is not a string", unsafe=True)
    p.budget.fill(target, dict(zip(items[::2], items[1::2])))
    p.stack.append(target)


def _op_setitems(p: _Parser) -> None:
    _set_items(p, p.pop_mark())


def _op_setitem(p: _Parser) -> None:
    value = p.pop()
    key = p.pop()
    _set_items(p, [key, value])


def _op_stack_global(p: _Parser) -> None:
    name = p.pop()
    module = p.pop()
    if not (isinstance(module, str) and isinstance(name, str)):
        p.fail("malformed stream: STACK_GLOBAL needs two strings")
    _push_global(p, module, name)


def _op_global(p: _Parser) -> None:
    module = p.f.readline(256).rstrip(b"\n").decode("utf-8", "replace")
    name = p.f.readline(256).rstrip(b"\n").decode("utf-8", "replace")
    _push_global(p, module, name)


def _push_global(p: _Parser, module: str, name: str) -> None:
    what = _ALLOWED_GLOBALS.get((module, name))
    if what is None:
        p.fail(f"global {module}.{name} is not on the allow-list", unsafe=True,
               expected=sorted(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS), actual=f"{module}.{name}")
    if what == "reconstruct":
        p.modules.add(module)
    p.stack.append(_Ref(what))


def _is_ref(obj: object, what: str) -> bool:
    return isinstance(obj, _Ref) and obj.what == what


def _op_reduce(p: _Parser) -> None:
    args = p.pop()
    func = p.pop()
    if _is_ref(func, "reconstruct"):
        if not (isinstance(args, tuple) and len(args) == 3 and _is_ref(args[0], "ndarray")
                and args[1] == (0,) and isinstance(args[2], _Bytes) and args[2].data == b"b"):
            p.fail(f"_reconstruct called with unexpected arguments {summary(args)}", unsafe=True)
        p.stack.append(_Ref("array"))
    elif _is_ref(func, "dtype"):
        if not (isinstance(args, tuple) and len(args) == 3 and args[1:] == (False, True)):
            p.fail(f"numpy.dtype called with unexpected arguments {summary(args)}", unsafe=True)
        if _is_ref(args[0], "bfloat16"):
            dtype = BFLOAT16
        elif isinstance(args[0], str) and args[0] in DTYPE_CODES:
            dtype = as_dtype(DTYPE_CODES[args[0]])
        else:
            p.fail(f"dtype {summary(args[0])} is not allowed in a shard", unsafe=True,
                   expected=sorted(DTYPE_CODES) + ["bfloat16"], actual=summary(args[0]))
        p.stack.append(_Ref("dtype", dtype))
    else:
        p.fail(f"REDUCE of {getattr(func, 'what', type(func).__name__)} is not allowed", unsafe=True)


def _op_newobj(p: _Parser) -> None:
    args = p.pop()
    cls = p.pop()
    if not _is_ref(cls, "quantized") or args != ():
        p.fail("NEWOBJ is only allowed for QuantizedWeight8bit()", unsafe=True)
    p.stack.append(_Ref("quantized_obj"))


def _op_build(p: _Parser) -> None:
    state = p.pop()
    obj = p.stack[-1] if p.stack else p.fail("malformed stream: BUILD on an empty stack")
    if _is_ref(obj, "dtype"):
        _build_dtype(p, obj, state)
    elif _is_ref(obj, "array"):
        _build_array(p, obj, state)
    elif _is_ref(obj, "quantized_obj"):
        if not (isinstance(state, dict) and set(state) == {"weight", "scales"}
                and all(_is_ref(v, "array") and v.value is not None for v in state.values())):
            p.fail(f"QuantizedWeight8bit state must hold arrays 'weight' and 'scales', found {summary(state)}",
                   unsafe=True)
        obj.value = (state["weight"].value, state["scales"].value)
    else:
        p.fail("BUILD on an object that is not a dtype, an array or a QuantizedWeight8bit", unsafe=True)


def _build_dtype(p: _Parser, obj: _Ref, state: object) -> None:
    if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[2:5] == (None,) * 3):
        p.fail(f"unexpected dtype state {summary(state)}")
    endian = state[1]
    if not (isinstance(endian, str) and endian in ("<", "|", "=")):
        p.fail(f"dtype byte order {summary(endian)} is not supported (little-endian only)", expected="<",
               actual=summary(endian))


def _build_array(p: _Parser, obj: _Ref, state: object) -> None:
    if obj.value is not None:
        p.fail("malformed stream: array state set twice")
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
        p.fail(f"unexpected ndarray state {summary(state)}")
    _, shape, dtype_ref, fortran, data = state
    if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
        p.fail(f"array shape {summary(shape)} is not a tuple of sizes")
    problem = shape_problem(shape)
    if problem:
        p.fail(problem, actual=len(shape))
    if not _is_ref(dtype_ref, "dtype") or not isinstance(fortran, bool):
        p.fail("array state does not hold a dtype and an order flag")
    desc = ArrayDesc(tuple(shape), dtype_ref.value)  # type: ignore[arg-type]
    if not isinstance(data, _Bytes):
        p.fail("array payload is not raw bytes", unsafe=True)
    ref = data.ref
    if ref.nbytes != desc.nbytes:
        p.fail(f"payload is {ref.nbytes} bytes but shape {summary(desc.shape, 1, 8)} of {desc.dtype} needs "
               f"{desc.nbytes}",
               expected=desc.nbytes, actual=ref.nbytes)
    parsed = ParsedArray(desc, ref, fortran)
    obj.value = parsed
    p.arrays.append(parsed)


_OPS = {
    b"\x80": _op_proto, b"\x95": _op_frame, b"\x94": _op_memoize,
    b"q": _op_put("<B"), b"r": _op_put("<I"), b"h": _op_get("<B"), b"j": _op_get("<I"),
    b"\x8c": _op_unicode("<B"), b"X": _op_unicode("<I"),
    b"C": _op_bytes("<B"), b"B": _op_bytes("<I"), b"\x8e": _op_bytes("<Q"),
    b"K": _op_int("<B"), b"M": _op_int("<H"), b"J": _op_int("<i"), b"\x8a": _op_long1,
    b"N": _op_const(None), b"\x88": _op_const(True), b"\x89": _op_const(False), b")": _op_const(()),
    b"(": _op_mark, b"t": _op_tuple, b"\x85": _op_tuple_n(1), b"\x86": _op_tuple_n(2), b"\x87": _op_tuple_n(3),
    b"}": _op_empty_dict, b"u": _op_setitems, b"s": _op_setitem,
    b"\x93": _op_stack_global, b"c": _op_global,
    b"R": _op_reduce, b"\x81": _op_newobj, b"b": _op_build,
    b".": lambda p: _STOP,
}


def parse(f: BinaryIO, *, path: str, size: int) -> ParsedShard:
    """Parse a shard's pickle stream from ``f`` (positioned at 0) without loading its payloads.

    Raises:
        UnsafePickleError: the stream uses a global, opcode or call outside the allow-list.
        ShardFormatError: the stream is truncated, has trailing bytes, or its payload sizes disagree
            with the shapes and dtypes it declares.
    """
    parser = _Parser(f, path, size)
    result = parser.run()
    end = f.tell()
    if end != size:
        parser.fail(f"{size - end} trailing bytes after the end of the pickle stream",
                    expected=end, actual=size)
    if _is_ref(result, "array") and isinstance(result.value, ParsedArray):
        arrays: tuple[ParsedArray, ...] = (result.value,)
        kind = "array"
    elif _is_ref(result, "quantized_obj") and result.value is not None:
        arrays = tuple(result.value)  # type: ignore[arg-type]
        kind = "quantized"
    else:
        parser.fail("the stream does not hold a numpy array or a QuantizedWeight8bit", unsafe=True)
    module = next(iter(parser.modules)) if len(parser.modules) == 1 else NUMPY1_MODULE
    return ParsedShard(kind, arrays, module, size)
