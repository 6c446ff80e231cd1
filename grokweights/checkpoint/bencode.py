"""Bencode (BitTorrent's encoding), strict, in pure Python; the one bencoder of grokweights.

:func:`decode` accepts only the canonical form: integers without leading zeros or ``-0``, string lengths
without leading zeros, dictionary keys that are byte strings in strictly ascending order, nothing after
the top-level value. Nesting depth and input length are bounded, so a hostile ``.torrent`` cannot exhaust
the stack or the memory. :func:`decode_torrent` also returns the exact byte span of the top-level
``info`` dictionary: the v1 infohash is the SHA-1 of those raw bytes, never of a re-encoding.

Every error is a :class:`BencodeError` naming the file (``where``), the byte offset, what was expected
and what was found.
"""

from __future__ import annotations

from typing import Any

from ..errors import TorrentError

__all__ = ["BencodeError", "decode", "decode_torrent", "encode", "MAX_DEPTH", "MAX_LENGTH"]

#: deepest nesting of lists and dicts accepted (a real torrent uses 5).
MAX_DEPTH = 64
#: largest input accepted, in bytes (a 318 GB release with 16 MiB pieces has ~400 kB of metadata).
MAX_LENGTH = 256 * 1024 * 1024

_DIGITS = b"0123456789"


class BencodeError(TorrentError, ValueError):
    """Bytes that are not canonical bencode."""


class _Decoder:
    """A cursor over the input; each ``_value`` call consumes exactly one value."""

    def __init__(self, data: bytes, where: str, max_depth: int) -> None:
        self.raw = bytes(data)
        self.where = where
        self.max_depth = max_depth
        self.pos = 0
        self.info_span: tuple[int, int] | None = None

    def fail(self, expected: str, found: str | None = None) -> BencodeError:
        if found is None:
            found = "end of data" if self.pos >= len(self.raw) else repr(self.raw[self.pos:self.pos + 1])
        return BencodeError(f"{self.where}: not valid bencode at byte {self.pos}: expected {expected}, "
                            f"found {found}", path=self.where, expected=expected, actual=found)

    def _number(self, end: bytes, what: str) -> int:
        """Digits (optionally signed) up to the byte ``end``, in canonical form."""
        stop = self.raw.find(end, self.pos)
        if stop < 0:
            raise self.fail(f"{what} ending in {end!r}", "end of data")
        text = self.raw[self.pos:stop]
        digits = text[1:] if text[:1] == b"-" else text
        if not digits or digits.strip(_DIGITS):
            raise self.fail(f"{what} (decimal digits)", repr(text[:24]))
        if (len(digits) > 1 and digits[:1] == b"0") or text == b"-0":
            raise self.fail(f"canonical {what} (no leading zero, no -0)", repr(text[:24]))
        if len(digits) > 40:
            raise self.fail(f"{what} of at most 40 digits", f"{len(digits)} digits")
        self.pos = stop + 1
        return int(text)

    def _string(self) -> bytes:
        length = self._number(b":", "string length")
        if length < 0:
            raise self.fail("a non-negative string length", str(length))
        end = self.pos + length
        if end > len(self.raw):
            raise self.fail(f"{length} bytes of string", f"{len(self.raw) - self.pos} bytes left")
        value = self.raw[self.pos:end]
        self.pos = end
        return value

    def _value(self, depth: int) -> Any:
        if self.pos >= len(self.raw):
            raise self.fail("a value")
        lead = self.raw[self.pos:self.pos + 1]
        if lead == b"i":
            self.pos += 1
            return self._number(b"e", "integer")
        if lead in (b"l", b"d"):
            if depth >= self.max_depth:
                raise self.fail(f"nesting of at most {self.max_depth} levels", f"level {depth + 1}")
            self.pos += 1
            return self._list(depth) if lead == b"l" else self._dict(depth)
        if lead[0] in _DIGITS:
            return self._string()
        raise self.fail("'i', 'l', 'd' or a digit")

    def _list(self, depth: int) -> list[Any]:
        items = []
        while self.raw[self.pos:self.pos + 1] != b"e":
            items.append(self._value(depth + 1))
        self.pos += 1
        return items

    def _dict(self, depth: int) -> dict[bytes, Any]:
        out: dict[bytes, Any] = {}
        previous: bytes | None = None
        while self.raw[self.pos:self.pos + 1] != b"e":
            if self.pos >= len(self.raw) or self.raw[self.pos] not in _DIGITS:
                raise self.fail("a byte-string key or 'e'")
            key_at = self.pos
            key = self._string()
            if previous is not None and key <= previous:
                self.pos = key_at
                raise self.fail(f"keys in strictly ascending order (after {previous!r})", repr(key))
            previous = key
            start = self.pos
            out[key] = self._value(depth + 1)
            if depth == 0 and key == b"info":
                self.info_span = (start, self.pos)
        self.pos += 1
        return out


def _check_input(data: bytes, where: str, max_length: int) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"bencode input must be bytes, not {type(data).__name__}")
    if len(data) > max_length:
        raise BencodeError(f"{where}: {len(data)} bytes is more than the {max_length} accepted for bencode",
                           path=where, expected=f"<= {max_length} bytes", actual=len(data))


def _decode(data: bytes, where: str, max_depth: int, max_length: int) -> _Decoder:
    _check_input(data, where, max_length)
    decoder = _Decoder(data, where, max_depth)
    decoder.value = decoder._value(0)  # type: ignore[attr-defined]
    if decoder.pos != len(decoder.raw):
        raise decoder.fail("end of data after the top-level value", f"{len(decoder.raw) - decoder.pos} more bytes")
    return decoder


def decode(data: bytes, *, where: str = "bencode", max_depth: int = MAX_DEPTH, max_length: int = MAX_LENGTH) -> Any:
    """Decode one canonical bencoded value (ints, ``bytes``, lists, dicts with ``bytes`` keys).

    Args:
        data: the whole input; trailing bytes are an error.
        where: the file name used in error messages.

    Raises:
        BencodeError: naming ``where``, the offset, what was expected and what was found.
    """
    return _decode(data, where, max_depth, max_length).value  # type: ignore[attr-defined]


def decode_torrent(data: bytes, *, where: str = "torrent", max_depth: int = MAX_DEPTH,
                   max_length: int = MAX_LENGTH) -> tuple[dict[bytes, Any], bytes]:
    """Decode a ``.torrent`` file: its top-level dict and the raw bytes of its ``info`` dict.

    ``hashlib.sha1(info_bytes).hexdigest()`` is the torrent's v1 infohash.

    Raises:
        BencodeError: the data is not canonical bencode, not a dict, or has no ``info`` dict.
    """
    decoder = _decode(data, where, max_depth, max_length)
    top = decoder.value  # type: ignore[attr-defined]
    if not isinstance(top, dict):
        raise BencodeError(f"{where}: a torrent must be a bencoded dict, found {type(top).__name__}",
                           path=where, expected="dict", actual=type(top).__name__)
    if decoder.info_span is None or not isinstance(top.get(b"info"), dict):
        raise BencodeError(f"{where}: the torrent has no 'info' dict", path=where, expected="info dict", actual=None)
    start, end = decoder.info_span
    return top, decoder.raw[start:end]


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"cannot bencode nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or not isinstance(value, (int, str, bytes, bytearray, list, tuple, dict)):
        raise TypeError(f"cannot bencode {type(value).__name__}")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (str, bytes, bytearray)):
        raw = value.encode() if isinstance(value, str) else bytes(value)
        out.append(b"%d:%s" % (len(raw), raw))
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        if not all(isinstance(k, (str, bytes)) for k in value):
            raise TypeError("cannot bencode a dict key that is not str or bytes")
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        for (a, _), (b, _) in zip(items, items[1:]):
            if a == b:
                raise ValueError(f"cannot bencode a dict with the key {a!r} twice")
        out.append(b"d")
        for key, item in items:
            out.append(b"%d:%s" % (len(key), key))
            _encode(item, out, depth + 1)
        out.append(b"e")


def encode(value: Any) -> bytes:
    """Bencode ``value``: ``int``, ``str`` (UTF-8) or ``bytes``, lists/tuples, dicts (keys sorted as bytes).

    Raises:
        TypeError: for other types (``bool`` and ``float`` included).
    """
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)
