"""No silent wrong weights in a store: one writer, proven completeness, checked reads, bound metadata."""

from __future__ import annotations

import fcntl
import json
import os
import shutil

import numpy as np
import pytest

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.shards import read_shard
from grokweights.constants import STORE_INDEX_NAME
from grokweights.errors import StoreError
from grokweights.store import reshard

TINY = preset("tiny")
MESH = "data=2,model=4"
W1 = "transformer/decoder_layer_1/moe/linear/w/weight"


@pytest.fixture(scope="module")
def ckpt(tiny_source):
    return tiny_source


@pytest.fixture(scope="module")
def pristine(ckpt, tmp_path_factory):
    """A finished store (read only: tests copy it)."""
    dst = tmp_path_factory.mktemp("pristine") / "store"
    reshard(ckpt, dst, MESH, layers="1")
    return dst


@pytest.fixture
def store(pristine, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(pristine, copy)
    return copy


def test_a_second_writer_is_refused_naming_the_holder(ckpt, tmp_path):
    dst = tmp_path / "store"
    dst.mkdir()
    fd = os.open(dst / ".grokweights.lock", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"4242\n")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreError, match=rf"another reshard is writing this store \(pid 4242, lock "
                                             rf"{dst}/.grokweights.lock\)"):
            reshard(ckpt, dst, MESH, layers="1", verify=False)
    finally:
        os.close(fd)
    assert not list(dst.rglob("zarr.json"))
    reshard(ckpt, dst, MESH, layers="1", verify=False)  # the holder is gone: the lock is free again


def test_rerun_proves_completeness_instead_of_trusting_zarr_json(ckpt, store):
    """The reported failure: a published array whose chunks are gone was taken as complete and read as zeros."""
    (store / STORE_INDEX_NAME).unlink()  # an interrupted run
    shutil.rmtree(store / W1 / "c")  # what a second writer's delete left behind
    report = reshard(ckpt, store, MESH, layers="1")
    assert W1 in report.written and W1 not in report.skipped
    from grokweights.runtime.load import load

    leaf = load(store)["transformer/decoder_layer_1/moe/linear"]["w"]
    assert np.array_equal(np.asarray(leaf.weight), read_shard(ckpt / "ckpt-0" / "tensor00014_000").weight)


def test_rerun_rewrites_an_array_whose_chunk_was_truncated(ckpt, store):
    (store / STORE_INDEX_NAME).unlink()
    chunk = next(p for p in sorted((store / W1 / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:-7])
    report = reshard(ckpt, store, MESH, layers="1")
    assert report.written == (W1,)


def test_a_finished_store_with_a_missing_chunk_is_unfinished_after_a_rerun_starts(ckpt, store):
    shutil.rmtree(store / W1 / "c")
    index = json.loads((store / STORE_INDEX_NAME).read_text())
    report = reshard(ckpt, store, MESH, layers="1")
    assert report.written == (W1,) and json.loads((store / STORE_INDEX_NAME).read_text())["sha256"] == index["sha256"]


def test_every_array_opens_in_zarr_python_and_equals_tensorstore(pristine):
    import zarr

    from grokweights.store import Store

    handle = Store(pristine)
    scales = [k for k in handle.keys() if k.endswith("/scales")]
    assert scales and all(handle.plan.array(k).dtype == "float32" for k in scales)
    for key in handle.keys():
        array = zarr.open_array(str(pristine / key), mode="r")
        assert np.array_equal(array[...], handle.read(key)), key


# ------------------------------------------------------------------------------------ checked on read

def _first_chunk(store, path=W1):
    return next(p for p in sorted((store / path / "c").rglob("*")) if p.is_file())


def _load(store):
    from grokweights.runtime.load import load

    return load(store)


def test_a_flipped_byte_fails_on_read_naming_array_and_chunk(store):
    chunk = _first_chunk(store)
    data = bytearray(chunk.read_bytes())
    data[5] ^= 0x01
    chunk.write_bytes(bytes(data))
    key = chunk.relative_to(store / W1).as_posix()
    with pytest.raises(StoreError, match=rf"{W1}: chunk {key} is corrupt \(crc32c mismatch\)") as info:
        _load(store)
    assert "\n" not in str(info.value) and "delete" in str(info.value)


def test_a_missing_chunk_is_an_error_never_zeros(store):
    chunk = _first_chunk(store)
    chunk.unlink()
    with pytest.raises(StoreError, match=rf"{W1}: chunk {chunk.relative_to(store / W1).as_posix()} is missing"):
        _load(store)


def test_a_truncated_chunk_is_a_store_error(store):
    chunk = _first_chunk(store)
    chunk.write_bytes(chunk.read_bytes()[:9])
    with pytest.raises(StoreError, match=rf"{W1}: chunk c/[\d/]+ is (truncated|corrupt)"):
        _load(store)


def test_swapped_array_folders_are_detected(store):
    a, b = (f"transformer/decoder_layer_1/multi_head_attention/{n}/w/weight" for n in ("key", "value"))
    (store / a).rename(store / "tmp")
    (store / b).rename(store / a)
    (store / "tmp").rename(store / b)
    with pytest.raises(StoreError, match="zarr.json is not the one the store index recorded"):
        _load(store)


def _edit_index(store, change, *, redigest=False):
    from grokweights.store.index import index_digest

    path = store / STORE_INDEX_NAME
    index = json.loads(path.read_text())
    change(index)
    if redigest:
        index["digest"] = index_digest(index)
    path.write_text(json.dumps(index))


@pytest.mark.parametrize("change", [
    lambda i: i["sha256"].update({W1: "0" * 64}),
    lambda i: i.update(mesh={"data": 4, "model": 2}),
    lambda i: i["config"].update(vocab_size=1024),
], ids=["sha256", "mesh", "config"])
def test_edited_index_is_detected(store, change):
    _edit_index(store, change)
    with pytest.raises(StoreError, match="the index was edited after reshard wrote it"):
        _load(store)


def test_edited_index_with_a_recomputed_digest_is_still_caught(store):
    _edit_index(store, lambda i: i["sha256"].update({W1: "0" * 64}), redigest=True)
    with pytest.raises(StoreError, match=f"{W1}: its zarr.json is not the one the store index recorded"):
        _load(store)
    _edit_index(store, lambda i: i.update(mesh={"data": 4, "model": 2}), redigest=True)
    with pytest.raises(StoreError, match="the index's mesh differs from its plan's"):
        _load(store)


def test_older_store_format_is_refused_and_a_rerun_converts_it(ckpt, store):
    for meta in store.rglob("zarr.json"):  # what a version-1 store looks like to this version
        doc = json.loads(meta.read_text())
        doc["attributes"]["grokweights"].pop("format")
        meta.write_text(json.dumps(doc))
    _edit_index(store, lambda i: i.update(version=1), redigest=True)
    with pytest.raises(StoreError, match=r"store format version 1, but this grokweights reads version 2; rerun "
                                         r"`grokweights reshard SRC DST` to convert it"):
        _load(store)
    report = reshard(ckpt, store, MESH, layers="1")
    assert not report.skipped and len(report.written) == len(report.plan.arrays)
    _load(store)


def test_verify_store_reports_each_bad_array(store):
    from click.testing import CliRunner

    from grokweights.cli import main

    ok = CliRunner().invoke(main, ["verify", str(store), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True
    flipped = _first_chunk(store)
    data = bytearray(flipped.read_bytes())
    data[7] ^= 0x10
    flipped.write_bytes(bytes(data))
    other = "transformer/decoder_layer_1/router/w"
    _first_chunk(store, other).unlink()
    result = CliRunner().invoke(main, ["verify", str(store)])
    assert result.exit_code == 1
    assert W1 in result.output and other in result.output and "FAILED: 2 array(s)" in result.output
