"""Hostile stores and destinations: every case one line naming the file and the fix, exit 1 or 2, no traceback,
bounded time and memory, nothing written outside the destination."""

from __future__ import annotations

import fcntl
import json
import os
import shutil

import pytest

from grokweights.constants import STORE_INDEX_NAME
from grokweights.store import reshard
from tests.hostile import assert_clean_failure, assert_tree_unchanged, run_cli, tree_state

MESH = "data=1,model=8"
W0 = "transformer/decoder_layer_0/moe/linear/w/weight"
#: jax reserves much address space at start; smoke runs get more than the suite's default
JAX_MEMORY = 16 << 30


@pytest.fixture(scope="module")
def pristine(tiny_source, tmp_path_factory):
    dst = tmp_path_factory.mktemp("hostile-store") / "store"
    reshard(tiny_source, dst, MESH, layers="0")
    return dst


@pytest.fixture
def store(pristine, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(pristine, copy)
    return copy


def _chunk(store, path=W0):
    return next(p for p in sorted((store / path / "c").rglob("*")) if p.is_file())


def _flip(chunk):
    data = bytearray(chunk.read_bytes())
    data[3] ^= 0x40
    chunk.write_bytes(bytes(data))


def _smoke(store):
    return run_cli(["smoke", store, "--mesh", "single", "--layers", "0"], memory=JAX_MEMORY, timeout=120)


@pytest.mark.parametrize("damage,cause", [
    (_flip, "is corrupt (crc32c mismatch)"),
    (lambda c: c.unlink(), "is missing"),
    (lambda c: c.write_bytes(c.read_bytes()[:11]), "is truncated"),
], ids=["flipped", "missing", "truncated"])
def test_damaged_chunk_on_smoke(store, damage, cause):
    chunk = _chunk(store)
    damage(chunk)
    before = tree_state(store)
    line = assert_clean_failure(_smoke(store), codes=(1,), names=(W0, chunk.relative_to(store / W0).as_posix()),
                                fix=(cause, "delete", "grokweights reshard"))
    assert "smoke" not in line.split(":")[0]
    assert_tree_unchanged(store, before)


@pytest.mark.parametrize("text,names,fix", [
    ("[1, 2]", "grokweights.json", ("not a grokweights store index", "rerun `grokweights reshard`")),
    ("{\"format\": \"grokweights.store\", \"version\": 2}", "grokweights.json", ("lacks 'plan'", "rerun")),
    ("{\"format\": \"grokweights.store\", \"version\": 1}", "grokweights.json", ("version 1", "to convert it")),
    ("{\"format\": \"grokweights.store\", \"version\": 99}", "grokweights.json", ("version 99", "upgrade")),
    ("{" * 100_000, "grokweights.json", ("not valid JSON", "rerun")),
], ids=["list", "no-plan", "older", "newer", "deep"])
def test_bad_index_on_verify(store, text, names, fix):
    (store / STORE_INDEX_NAME).write_text(text)
    before = tree_state(store)
    assert_clean_failure(run_cli(["verify", store]), codes=(1,), names=names, fix=fix)
    assert_tree_unchanged(store, before)


def test_edited_index_on_verify(store):
    index = json.loads((store / STORE_INDEX_NAME).read_text())
    index["mesh"] = {"data": 2, "model": 4}
    (store / STORE_INDEX_NAME).write_text(json.dumps(index))
    assert_clean_failure(run_cli(["verify", store]), codes=(1,), names="grokweights.json",
                         fix=("edited after reshard wrote it", "rerun `grokweights reshard`"))


def test_unfinished_store_on_smoke_and_verify(store):
    (store / STORE_INDEX_NAME).unlink()
    for result in (_smoke(store), run_cli(["verify", store])):
        assert_clean_failure(result, codes=(1,), names=str(store),
                             fix=("unfinished store", "rerun `grokweights reshard`"))


def test_reshard_destination_refusals(tiny_source, tmp_path):
    src_before = tree_state(tiny_source)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    afile = tmp_path / "a-file"
    afile.write_text("x")
    cases = [
        ([""], cwd, ("destination is empty", "name a folder")),
        ([afile], cwd, (str(afile), "is not a folder")),
        ([tiny_source], cwd, ("inside the source checkpoint", "outside")),  # the folder holding ckpt-0
        ([tiny_source / "ckpt-0"], cwd, ("inside the source checkpoint", "outside")),
        ([tiny_source / "ckpt-0" / "st"], cwd, ("inside the source checkpoint", "outside")),
    ]
    for dst, where, fix in cases:
        result = run_cli(["reshard", tiny_source, *dst, "--mesh", MESH], cwd=where)
        assert_clean_failure(result, codes=(2,), fix=fix)
    assert_tree_unchanged(tiny_source, src_before)
    assert not any(cwd.iterdir()) and afile.read_text() == "x"


def test_second_writer_on_reshard(tiny_source, tmp_path):
    dst = tmp_path / "st"
    dst.mkdir()
    fd = os.open(dst / ".grokweights.lock", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"31337\n")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_cli(["reshard", tiny_source, dst, "--mesh", MESH, "--no-verify"])
    finally:
        os.close(fd)
    assert_clean_failure(result, codes=(1,), names=("pid 31337", f"{dst}/.grokweights.lock"),
                         fix="wait for it to finish or stop it")
    assert sorted(p.name for p in dst.iterdir()) == [".grokweights.lock"]


def test_index_that_is_a_list_on_smoke(store):
    (store / STORE_INDEX_NAME).write_text("[]")
    assert_clean_failure(_smoke(store), codes=(1,), names="grokweights.json", fix="not a grokweights store index")
