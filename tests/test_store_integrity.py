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
