"""The safe reader and the byte-exact writer."""

import hashlib
import io
import os
import pickle
import pickletools
import subprocess

import ml_dtypes
import numpy as np
import pytest

from grokweights._atomic import atomic_path
from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import layout
from grokweights.checkpoint.shards import (
    LazyArray,
    QuantizedWeight8bit,
    dequantize,
    read_header,
    read_shard,
    write_checkpoint,
    write_shard,
)
from grokweights.checkpoint.synth import synthesize
from grokweights.errors import ShardFormatError, UnsafePickleError


def test_round_trip_every_kind(tmp_path):
    rng = np.random.default_rng(0)
    values = {
        "f32": rng.standard_normal((33, 7)).astype(np.float32),
        "bf16": rng.standard_normal((5,)).astype(ml_dtypes.bfloat16),
        "i8": rng.integers(-128, 127, (100_000,)).astype(np.int8),
        "q": QuantizedWeight8bit(rng.integers(-128, 127, (8, 64, 344)).astype(np.int8),
                                 rng.random((8, 8, 344)).astype(ml_dtypes.bfloat16)),
    }
    for name, value in values.items():
        write_shard(tmp_path / name, value)
        got = read_shard(tmp_path / name)
        if isinstance(value, QuantizedWeight8bit):
            np.testing.assert_array_equal(got.weight, value.weight)
            np.testing.assert_array_equal(got.scales, value.scales)
            assert got.scales.dtype == ml_dtypes.bfloat16
        else:
            np.testing.assert_array_equal(got, value)
            assert got.dtype == value.dtype


def test_reads_are_read_only_memory_maps(tmp_path):
    a = np.arange(1 << 16, dtype=np.float32)
    write_shard(tmp_path / "a", a)
    got = read_shard(tmp_path / "a")
    assert not got.flags.writeable
    base = got
    while getattr(base, "base", None) is not None and not isinstance(base, memoryview):
        base = base.base
    assert "mmap" in type(base).__name__ or isinstance(base, memoryview)
    with pytest.raises(ValueError):
        got[0] = 1


def test_upstream_pickle_load_reads_what_we_write(tmp_path, monkeypatch):
    from dataclasses import dataclass

    import __main__

    @dataclass
    class QuantizedWeight8bit_:
        weight: object
        scales: object

    monkeypatch.setattr(__main__, "QuantizedWeight8bit", QuantizedWeight8bit_, raising=False)
    w = np.arange(64 * 8, dtype=np.int8).reshape(64, 8)
    s = np.full((8, 8), 0.5, ml_dtypes.bfloat16)
    write_shard(tmp_path / "q", QuantizedWeight8bit(w, s))
    with open(tmp_path / "q", "rb") as f:
        loaded = pickle.load(f)
    np.testing.assert_array_equal(loaded.weight, w)
    np.testing.assert_array_equal(loaded.scales, s)


def test_lazy_arrays_stream_the_same_bytes(tmp_path):
    a = np.random.default_rng(3).standard_normal((1000, 70)).astype(np.float32)
    write_shard(tmp_path / "whole", a)
    write_shard(tmp_path / "lazy", LazyArray(a.shape, a.dtype, lambda: (a[i:i + 64] for i in range(0, 1000, 64))))
    assert (tmp_path / "whole").read_bytes() == (tmp_path / "lazy").read_bytes()


def test_short_lazy_payload_fails_and_leaves_nothing(tmp_path):
    a = np.zeros((10, 10), np.float32)
    with pytest.raises(ShardFormatError, match="produced 360 bytes, expected 400"):
        write_shard(tmp_path / "x", LazyArray((10, 10), a.dtype, lambda: [a[:9]]))
    assert not (tmp_path / "x").exists() and not atomic_path(tmp_path / "x").exists()


def test_writer_bytes_are_stable(tmp_path):
    """The synthetic tiny checkpoint for seed 0 is pinned: any change in the writer or synth shows here."""
    ckpt = synthesize(tmp_path, preset("tiny"), seed=0)
    digest = hashlib.sha256()
    for path in sorted(ckpt.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    assert digest.hexdigest() == PINNED_TINY_SEED0


PINNED_TINY_SEED0 = "bc87ab567525580232e691783e224c10b0f197063a46a65933d3dd209c060939"


def test_write_checkpoint_refuses_wrong_shapes(tmp_path):
    specs = layout(preset("tiny"))
    with pytest.raises(ShardFormatError, match="language_model/in_out_embed/embeddings"):
        write_checkpoint(tmp_path, specs[:1], lambda spec: np.zeros((3, 3), np.float32))


def test_dequantize_uses_block_rows():
    w = np.ones((8, 2), np.int8)
    s = np.array([[1, 10], [2, 20]], dtype=ml_dtypes.bfloat16)
    out = dequantize(w, s)
    np.testing.assert_array_equal(out[:4], [[1, 10]] * 4)
    np.testing.assert_array_equal(out[4:], [[2, 20]] * 4)


# ---------------------------------------------------------------------------------------- hostile files


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _EvilSubprocess:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (subprocess.call, (["sh", "-c", self.cmd],))


class _OtherClass:
    def __reduce__(self):
        return (_OtherClass, ())


def _persistent_id_pickle() -> bytes:
    buf = io.BytesIO()

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "ref" if isinstance(obj, str) and obj == "x" else None

    P(buf, protocol=4).dump(["x"])
    return buf.getvalue()


@pytest.mark.parametrize("make", ["os.system", "subprocess", "other-class", "persistent-id", "array-then-evil"])
def test_hostile_pickles_are_refused_without_running_anything(tmp_path, make):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    if make == "os.system":
        data = pickle.dumps(_Evil(cmd), protocol=4)
    elif make == "subprocess":
        data = pickle.dumps(_EvilSubprocess(cmd), protocol=4)
    elif make == "other-class":
        data = pickle.dumps(_OtherClass(), protocol=4)
    elif make == "persistent-id":
        data = _persistent_id_pickle()
    else:  # a valid array whose dtype is replaced by a call to os.system
        data = pickle.dumps({"a": np.zeros(3, np.float32), "b": _Evil(cmd)}, protocol=4)
    path = tmp_path / "tensor00000_000"
    path.write_bytes(data)
    # sanity: the payload really would have run
    if make in ("os.system", "subprocess"):
        probe = tmp_path / "probe"
        pickle.loads(data.replace(str(marker).encode(), str(probe).encode()))
        assert probe.exists()
    with pytest.raises(UnsafePickleError) as info:
        read_shard(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_object_dtype_is_refused(tmp_path):
    data = pickle.dumps(np.array([1, "a"], dtype=object), protocol=4)
    (tmp_path / "o").write_bytes(data)
    with pytest.raises(UnsafePickleError, match="dtype 'O8' is not allowed"):
        read_shard(tmp_path / "o")


@pytest.fixture
def good_shard(tmp_path):
    path = tmp_path / "tensor00002_000"
    write_shard(path, QuantizedWeight8bit(np.ones((64, 344), np.int8), np.ones((1, 344), ml_dtypes.bfloat16)))
    return path


@pytest.mark.parametrize("cut", [1, 100, 5000, 22000])
def test_truncated_files_are_refused(good_shard, cut):
    data = good_shard.read_bytes()
    good_shard.write_bytes(data[:-cut])
    with pytest.raises(ShardFormatError, match="truncated") as info:
        read_header(good_shard)
    assert str(good_shard) in str(info.value)


def test_trailing_garbage_is_refused(good_shard):
    with open(good_shard, "ab") as f:
        f.write(b"\x00junk")
    with pytest.raises(ShardFormatError, match="5 trailing bytes"):
        read_header(good_shard)


def test_payload_length_must_match_shape(tmp_path):
    a = np.zeros(10, np.float32)
    data = bytearray(pickle.dumps(a, protocol=4))
    # shrink the declared shape from 10 to 9 elements: the payload then disagrees with shape x dtype
    ops = list(pickletools.genops(bytes(data)))
    pos = next(p for op, arg, p in ops if op.name == "BININT1" and arg == 10)
    data[pos + 1] = 9
    (tmp_path / "s").write_bytes(bytes(data))
    with pytest.raises(ShardFormatError, match="payload is 40 bytes but shape \\(9,\\) of float32 needs 36"):
        read_header(tmp_path / "s")


def test_header_only_parse_reports_layout(good_shard):
    header = read_header(good_shard)
    assert header.kind == "quantized"
    assert header.desc.weight.shape == (64, 344)
    assert header.header_bytes < 400


def test_drop_pages_unmaps_a_shard_map_and_never_a_writable_buffer(tmp_path):
    import mmap

    from grokweights.checkpoint.shards import drop_pages

    # a writable private anonymous map holds the only copy of its bytes: dropping its pages would zero them
    buffer = np.frombuffer(mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), np.uint8)
    buffer[:] = 7
    drop_pages(buffer[4096:])
    assert (buffer == 7).all()
    # a shard's read-only map: its pages go, its bytes come back from the file
    weights = {"w": np.arange(1 << 18, dtype=np.float32)}
    write_shard(tmp_path / "tensor00000_000", weights["w"])
    array = read_shard(tmp_path / "tensor00000_000")
    drop_pages(array)
    np.testing.assert_array_equal(array, weights["w"])
