"""The verified fast path against tensorstore, the reference: same bytes read, same store written, same refusals.

Every array of stores with Grok-1's dtypes (int8 weights, float32 scales and arrays, bfloat16 dequantised
weights) on several meshes is read through both paths, whole and in regions that cut chunks; the store our
encoder writes is byte-for-byte the one tensorstore's zarr3 driver writes; and every kind of damage is refused
by both paths with the same one-line error (cause and fix), including chunks moved inside an array or
brought from another array or store, which a checksum alone cannot see.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.synth import synthesize
from grokweights.constants import STORE_INDEX_NAME
from grokweights.errors import StoreError
from grokweights.store import Store, reshard

W1 = "transformer/decoder_layer_1/moe/linear/w/weight"
PATHS = ("auto", "tensorstore")


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stores(tiny_source, tmp_path_factory):
    """``{name: store}``: default stores on three meshes (two rule sets) and a bfloat16 one."""
    root = tmp_path_factory.mktemp("fastpath")
    made = {}
    for name, kwargs in {"data2-model4": dict(mesh="data=2,model=4"), "data1-model8": dict(mesh="data=1,model=8"),
                         "expert": dict(mesh="expert=8,model=1", rules="expert"),
                         "bf16": dict(mesh="data=1,model=2", dtype="bfloat16")}.items():
        made[name] = root / name
        reshard(tiny_source, made[name], layers="0-1", **kwargs)
    return made


@pytest.mark.parametrize("name", ["data2-model4", "data1-model8", "expert", "bf16"])
def test_every_array_reads_the_same_through_both_paths(stores, name):
    fast, reference = Store(stores[name]), Store(stores[name], io="tensorstore")
    assert all(fast.fast(p) for p in fast.keys()) and not any(reference.fast(p) for p in fast.keys())
    dtypes = set()
    for path in fast.keys():
        ours, theirs = fast.read(path), reference.read(path)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert ours.tobytes() == theirs.tobytes(), path
        assert fast.sha256(path) == reference.sha256(path) == fast.index["sha256"][path]
        dtypes.add(str(ours.dtype))
        # a region that cuts chunks on every axis (the parts not landing contiguously take the copy path)
        region = tuple(slice(n // 3, max(n // 3 + 1, n - n // 5)) for n in ours.shape)
        assert fast.read(path, region).tobytes() == reference.read(path, region).tobytes(), path
    assert dtypes == ({"bfloat16", "float32"} if name == "bf16" else {"int8", "float32"})


def test_our_encoder_writes_the_store_tensorstore_writes(tiny_source, tmp_path, monkeypatch):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    reshard(tiny_source, ours, "data=2,model=4", layers="0-1")
    monkeypatch.setenv("GROKWEIGHTS_STORE_IO", "tensorstore")
    reshard(tiny_source, theirs, "data=2,model=4", layers="0-1")
    a, b = _tree(ours), _tree(theirs)
    assert a.keys() == b.keys()
    index_a, index_b = (json.loads(t.pop(STORE_INDEX_NAME)) for t in (a, b))
    index_a.pop("created"), index_b.pop("created"), index_a.pop("digest"), index_b.pop("digest")
    assert index_a == index_b
    assert a == b  # every chunk and every zarr.json (with its chunk table), byte for byte


def test_zarr_python_reads_what_our_encoder_wrote(stores):
    zarr = pytest.importorskip("zarr")
    store = Store(stores["data2-model4"])
    for path in store.keys():
        assert np.array_equal(np.asarray(zarr.open_array(str(stores["data2-model4"] / path), mode="r")[...]),
                              store.read(path)), path


# ---------------------------------------------------------------------------------------------- refusals


@pytest.fixture
def store(stores, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(stores["data2-model4"], copy)
    return copy


def _chunks(store, path=W1):
    return [p for p in sorted((store / path / "c").rglob("*")) if p.is_file()]


def _flip(store):
    chunk = _chunks(store)[0]
    data = bytearray(chunk.read_bytes())
    data[5] ^= 0x01
    chunk.write_bytes(bytes(data))
    return chunk, "is corrupt (crc32c mismatch)"


def _truncate(store):
    chunk = _chunks(store)[1]
    chunk.write_bytes(chunk.read_bytes()[:9])
    return chunk, "is truncated"


def _empty(store):
    chunk = _chunks(store)[0]
    chunk.write_bytes(b"")
    return chunk, "is truncated"


def _missing(store):
    chunk = _chunks(store)[0]
    chunk.unlink()
    return chunk, "is missing"


def _swap_inside(store):
    a, b = _chunks(store)[:2]
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)
    return a, "is not the chunk written at this position"


def _from_other_array(store):
    """A chunk of layer 0's same-shaped weight in place of layer 1's."""
    target = _chunks(store)[0]
    other = store / W1.replace("decoder_layer_1", "decoder_layer_0") / target.relative_to(store / W1)
    shutil.copyfile(other, target)
    return target, "is not the chunk written at this position"


def _from_other_store(store, other):
    target = _chunks(store)[0]
    shutil.copyfile(other / target.relative_to(store), target)
    return target, "is not the chunk written at this position"


def _symlink(store):
    a, b = _chunks(store)[:2]
    a.unlink()
    a.symlink_to(b)
    return a, "is not the chunk written at this position"


def _fifo(store):
    chunk = _chunks(store)[0]
    chunk.unlink()
    os.mkfifo(chunk)
    return chunk, "not a regular file"


DAMAGE = {"flipped": _flip, "truncated": _truncate, "empty": _empty, "missing": _missing,
          "swapped-inside": _swap_inside, "other-array": _from_other_array, "symlink": _symlink, "fifo": _fifo}


@pytest.fixture(scope="module")
def other_store(tmp_path_factory):
    """A store of the same layout made from another checkpoint (another seed)."""
    root = tmp_path_factory.mktemp("other")
    synthesize(root / "src", preset("tiny"), seed=7)
    reshard(root / "src", root / "store", "data=2,model=4", layers="0-1", config="tiny", verify=False)
    return root / "store"


def _error(store, io):
    from grokweights.runtime.load import load

    if io == "tensorstore":
        os.environ["GROKWEIGHTS_STORE_IO"] = "tensorstore"
    try:
        with pytest.raises(StoreError) as info:
            load(store)
    finally:
        os.environ.pop("GROKWEIGHTS_STORE_IO", None)
    return str(info.value)


@pytest.mark.parametrize("kind", [*DAMAGE, "other-store"])
def test_both_paths_refuse_damage_with_the_same_line(store, other_store, kind):
    chunk, cause = _from_other_store(store, other_store) if kind == "other-store" else DAMAGE[kind](store)
    key = chunk.relative_to(store / W1).as_posix()
    lines = {io: _error(store, io) for io in PATHS}
    for io, line in lines.items():
        assert "\n" not in line, (io, line)
        assert line.startswith(f"{store}/{W1}: chunk {key} "), (io, line)
        assert cause in line and "delete" in line and "grokweights reshard" in line, (io, line)
    # the same words but for the detail in parentheses (each reader's own wording of what it saw)
    assert len({line.split(" (")[0] for line in lines.values()}) == 1, lines


def _edit_zarr_json(store):
    meta = store / W1 / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["grokweights"]["chunks"]["crc32c"][0] ^= 1  # forging the table is editing the zarr.json
    meta.write_text(json.dumps(doc))
    return "its zarr.json is not the one the store index recorded"


def _edit_index(store):
    index = json.loads((store / STORE_INDEX_NAME).read_text())
    index["sha256"][W1] = "0" * 64
    (store / STORE_INDEX_NAME).write_text(json.dumps(index))
    return "the index was edited after reshard wrote it"


@pytest.mark.parametrize("io", PATHS)
@pytest.mark.parametrize("edit", [_edit_zarr_json, _edit_index], ids=["zarr.json", "index"])
def test_an_edited_zarr_json_or_index_is_refused_on_both_paths(store, io, edit):
    assert edit(store) in _error(store, io)


def test_verify_store_finds_a_chunk_moved_inside_its_array(store):
    from grokweights.store import verify_store

    _swap_inside(store)
    report = verify_store(store)
    assert not report.ok and [f.path for f in report.failures] == [W1]
    assert "is not the chunk written at this position" in report.failures[0].detail


def test_a_store_written_before_chunk_tables_is_read_and_a_rerun_adds_them(tiny_source, store, caplog):
    """Records without a chunk table (grokweights before this one) still read (each chunk's own crc32c
    checked); a reshard rerun rewrites exactly those arrays, with tables."""
    from grokweights.store.index import index_digest

    index = json.loads((store / STORE_INDEX_NAME).read_text())
    for meta in store.rglob("zarr.json"):
        doc = json.loads(meta.read_text())
        doc["attributes"]["grokweights"]["chunks"].pop("crc32c")
        meta.write_text(json.dumps(doc))
        path = meta.parent.relative_to(store).as_posix()
        import hashlib

        index["metadata"][path] = hashlib.sha256(meta.read_bytes()).hexdigest()
    index["digest"] = index_digest(index)
    (store / STORE_INDEX_NAME).write_text(json.dumps(index))
    old = Store(store)
    assert old.chunk_table(W1) is None
    assert old.read(W1).tobytes() == Store(store, io="tensorstore").read(W1).tobytes()
    report = reshard(tiny_source, store, "data=2,model=4", layers="0-1")
    assert len(report.written) == len(report.plan.arrays)
    assert Store(store).chunk_table(W1) is not None
