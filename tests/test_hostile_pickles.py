"""Hostile shard pickles: bounded work and memory, bounded messages, Python-int shape arithmetic."""

from __future__ import annotations

import io
import struct

import pytest

from grokweights.checkpoint.pickle_parse import parse
from grokweights.checkpoint.shards import read_header, read_shard
from grokweights.errors import ShardFormatError, UnsafePickleError
from tests.hostile import PROBLEM_PREFIXES, assert_clean_failure, run_cli

RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\n"


def _long(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8 or 1, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def array_stream(shape: tuple[int, ...], payload: bytes, code: bytes = b"i1") -> bytes:
    """A release-style pickle of one array with any ``shape`` and ``payload`` (they need not agree)."""
    dims = b"(" + b"".join(_long(d) for d in shape) + b"t"
    dtype = (b"cnumpy\ndtype\n\x8c" + bytes([len(code)]) + code + b"\x89\x88\x87R"
             + b"(K\x03\x8c\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"\x80\x04" + RECONSTRUCT + b"cnumpy\nndarray\nK\x00\x85C\x01b\x87R"
            + b"(K\x01" + dims + dtype + b"\x89B" + struct.pack("<I", len(payload)) + payload + b"tb.")


def memo_bomb(doublings: int = 40) -> bytes:
    """~500 bytes: a tuple of 2^doublings leaves through the memo, then a refused call that shows it."""
    out = b"\x80\x04N\x94"
    for i in range(doublings):
        out += (b"j" + struct.pack("<I", i)) * 2 + b"\x86\x94"
    return out + RECONSTRUCT + b"j" + struct.pack("<I", doublings) + b"R."


def nested_tuples(depth: int = 200_000) -> bytes:
    return b"\x80\x04" + RECONSTRUCT + b"N" + b"\x85" * depth + b"R."


def _parse(data: bytes):
    return parse(io.BytesIO(data), path="shard", size=len(data))


def test_array_stream_helper_is_a_valid_shard():
    parsed = _parse(array_stream((2, 3), bytes(6)))
    assert parsed.arrays[0].desc.shape == (2, 3)


@pytest.mark.parametrize("data, words", [
    (memo_bomb(), "objects"),
    (nested_tuples(), "nested"),
    (b"\x80\x04N" + b"q\x00" * 200_000 + b".", "opcodes"),
    (b"\x80\x04" + b"N" * 5_000 + b".", "stack"),
    (b"\x80\x04" + b"N\x94" * 5_000 + b".", "memo"),
    (b"\x80\x04" + b"(" * 5_000 + b".", "marks"),
    # a dict filled after it was put in a tuple would escape the count of the tuple's size
    (b"\x80\x04}\x94h\x00\x85h\x00\x8c\x01a\x8c\x01bs.", "SETITEMS"),
], ids=["memo-bomb", "nested-tuple1", "ops", "stack", "memo", "marks", "late-dict"])
def test_parser_bounds_what_it_builds(data, words):
    with pytest.raises(UnsafePickleError) as info:
        _parse(data)
    assert words in str(info.value)
    assert len(str(info.value)) < 600


@pytest.mark.parametrize("shape, payload", [
    ((2**61 + 1, 8), bytes(8)),  # np.prod(dtype=int64) wraps to 8
    ((2**63, 0), b""),  # zero elements, but no numpy array can have this shape
    ((2**64 + 5,), bytes(5)),
    ((1,) * 40, bytes(1)),  # rank
])
def test_shapes_in_python_ints(tmp_path, shape, payload):
    path = tmp_path / "tensor00000_000"
    path.write_bytes(array_stream(shape, payload))
    with pytest.raises(ShardFormatError):
        read_header(path)
    with pytest.raises(ShardFormatError):
        read_shard(path)


def _lone_shard(tmp_path, data: bytes):
    ckpt = tmp_path / "bad" / "ckpt-0"
    ckpt.mkdir(parents=True)
    (ckpt / "tensor00000_000").write_bytes(data)
    return ckpt.parent, ckpt / "tensor00000_000"


@pytest.mark.parametrize("data", [memo_bomb(), nested_tuples(), array_stream((2**63, 0), b"")],
                         ids=["memo-bomb", "nested-tuple1", "huge-dim"])
def test_inspect_refuses_hostile_shard(tmp_path, data):
    folder, shard = _lone_shard(tmp_path, data)
    result = run_cli(["inspect", folder], timeout=60)
    assert_clean_failure(result, names=str(shard), fix="re")


def test_inspect_of_checkpoint_with_bomb_reports_the_file(tiny_checkpoint):
    shard = tiny_checkpoint / "ckpt-0" / "tensor00003_000"
    shard.write_bytes(memo_bomb())
    result = run_cli(["inspect", tiny_checkpoint], timeout=60)
    assert_clean_failure(result, names=str(shard), codes=(1,), prefixes=PROBLEM_PREFIXES)


def test_verify_deep_and_reshard_refuse_bomb(tiny_checkpoint, tmp_path):
    shard = tiny_checkpoint / "ckpt-0" / "tensor00003_000"
    data = memo_bomb()
    shard.write_bytes(data + bytes(max(0, shard.stat().st_size - len(data))))  # keep the manifest's size
    result = run_cli(["verify", tiny_checkpoint, "--deep", "--fast"], timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "tensor00003_000" in result.stdout
    result = run_cli(["reshard", tiny_checkpoint, tmp_path / "store", "--mesh", "data=1,model=1"], timeout=120,
                     memory=None)
    assert_clean_failure(result, names="tensor00003_000")
