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


# ------------------------------------------------------------------------ the second campaign (store rooms)


def _chunks(store, path=W0):
    return [p for p in sorted((store / path / "c").rglob("*")) if p.is_file()]


def _swap(store):
    a, b = _chunks(store)[:2]
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)
    return a


def _symlinked(store):
    a, b = _chunks(store)[:2]
    a.unlink()
    a.symlink_to(b)
    return a


def _from_other_array(store):
    target = _chunks(store)[0]
    shutil.copyfile(store / W0.replace("moe/linear/", "moe/linear_v/") / target.relative_to(store / W0), target)
    return target


@pytest.mark.parametrize("move", [_swap, _symlinked, _from_other_array], ids=["swapped", "symlink", "other-array"])
def test_a_chunk_moved_inside_its_array_or_from_another_is_refused_on_smoke(store, move):
    """Campaign 2, item 1: a chunk with a valid checksum in the wrong place was read as valid."""
    chunk = move(store)
    before = tree_state(store)
    assert_clean_failure(_smoke(store), codes=(1,), names=(W0, chunk.relative_to(store / W0).as_posix()),
                         fix=("is not the chunk written at this position", "delete", "grokweights reshard"))
    assert_tree_unchanged(store, before)


def _null_manifest(src, out):
    """``M0``: the source's manifest with every sha256 null (as the shipped grok-1 manifest is)."""
    doc = json.loads((src / "grokweights-manifest.json").read_text())
    for shard in doc["shards"]:
        shard["sha256"] = None
    out.write_text(json.dumps(doc))
    return out


def test_follow_without_sha256_is_refused_before_anything_is_written(tiny_source, tmp_path):
    """Campaign 2, item 2: --follow took a settled size for a complete shard (a preallocated file converted)."""
    m0 = _null_manifest(tiny_source, tmp_path / "m0.json")
    dst = tmp_path / "st"
    result = run_cli(["reshard", tiny_source, dst, "--mesh", MESH, "--follow", "--manifest", m0, "--timeout", "5"],
                     memory=JAX_MEMORY)
    assert_clean_failure(result, codes=(1,), names="no sha256", fix=("--follow cannot tell a complete shard",
                                                                     "manifest pin --from-torrent"))
    assert not dst.exists() or not list(dst.rglob("zarr.json"))


def test_a_rerun_from_another_source_without_sha256_rewrites_every_array(tiny_source, tmp_path):
    """Campaign 2, item 3: with no sha256 the rerun called another source's arrays complete."""
    from grokweights.checkpoint.config import preset
    from grokweights.checkpoint.synth import synthesize
    from grokweights.store import Store

    other = tmp_path / "s7"
    synthesize(other, preset("tiny"), seed=7)
    m0 = _null_manifest(tiny_source, tmp_path / "m0.json")
    dst = tmp_path / "st"
    reshard(tiny_source, dst, MESH, layers="0", manifest=m0)
    report = reshard(other, dst, MESH, layers="0", manifest=m0, verify=False)
    assert not report.skipped and len(report.written) == len(report.plan.arrays)
    theirs = tmp_path / "st7"
    reshard(other, theirs, MESH, layers="0", manifest=m0, verify=False)
    assert Store(dst).index["sha256"] == Store(theirs).index["sha256"]
    again = reshard(other, dst, MESH, layers="0", manifest=m0, verify=False)  # the same source: nothing to do
    assert not again.written


def test_reshard_into_a_folder_that_is_not_a_store_is_refused(tiny_source, tmp_path):
    """Also seen in campaign 2: `reshard S .` wrote a store among the files of the current folder."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "notes.txt").write_text("mine")
    before = tree_state(cwd)
    assert_clean_failure(run_cli(["reshard", tiny_source, ".", "--mesh", MESH], cwd=cwd), codes=(2,),
                         fix=("not a grokweights store", "choose a new folder"))
    assert_tree_unchanged(cwd, before)


def _fifo_chunk(store):
    chunk = _chunks(store)[0]
    chunk.unlink()
    os.mkfifo(chunk)
    return chunk, (W0, "not a regular file")


def _fifo_zarr_json(store):
    meta = store / W0 / "zarr.json"
    meta.unlink()
    os.mkfifo(meta)
    return meta, ("zarr.json", "not a regular file")


def _fifo_index(store):
    index = store / STORE_INDEX_NAME
    index.unlink()
    os.mkfifo(index)
    return index, (STORE_INDEX_NAME, "not a regular file")


def _sparse_index(store):
    index = store / STORE_INDEX_NAME
    with open(index, "r+b") as f:
        f.truncate(3 << 30)  # 3 GB, sparse: nothing to read but its size
    return index, (STORE_INDEX_NAME, "more than")


@pytest.mark.parametrize("damage", [_fifo_chunk, _fifo_zarr_json, _fifo_index, _sparse_index],
                         ids=["fifo-chunk", "fifo-zarr.json", "fifo-index", "sparse-3GB-index"])
def test_fifos_and_huge_files_in_a_store_neither_hang_nor_flood_memory(store, damage):
    """Campaign 2, item 13: a FIFO in place of a chunk, a zarr.json or the index hung verify, load and smoke;
    a 3 GB sparse index gave a MemoryError traceback."""
    _, names = damage(store)
    assert_clean_failure(_smoke(store), codes=(1,), names=names, fix="rerun")
    result = run_cli(["verify", store], timeout=30)
    if damage in (_fifo_chunk, _fifo_zarr_json):  # the index is intact: verify reports the damaged array, exit 1
        assert result.returncode == 1 and "damaged" in result.stdout, result
        assert all(n in result.stdout for n in names) and "Traceback" not in result.stderr, result
    else:
        assert_clean_failure(result, codes=(1,), names=names, fix="rerun")


def test_a_fifo_in_place_of_the_store_lock_is_refused_in_one_line(tiny_source, tmp_path):
    """Campaign 2, item 19: `reshard` when the store's lock file is a FIFO gave a traceback."""
    dst = tmp_path / "st"
    dst.mkdir()
    os.mkfifo(dst / ".grokweights.lock")
    result = run_cli(["reshard", tiny_source, dst, "--mesh", MESH, "--no-verify"], timeout=30)
    assert_clean_failure(result, codes=(1,), names=".grokweights.lock", fix=("not a regular file", "remove it"))
    assert sorted(p.name for p in dst.iterdir()) == [".grokweights.lock"]


@pytest.mark.parametrize("how", ["enospc", "efbig"])
def test_a_full_disk_during_reshard_is_one_line(tiny_source, tmp_path, how):
    """Campaign 2, item 19: `reshard` on a real ENOSPC or EFBIG printed a traceback."""
    import shutil as sh

    folder = tmp_path / "disk"
    folder.mkdir()
    if how == "enospc":  # a real full disk: a 256 KiB tmpfs in a private mount namespace
        if os.geteuid() != 0 or sh.which("unshare") is None:
            pytest.skip("a private tmpfs needs root and unshare")
        wrap = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=256k tmpfs "$0" || exit 99; exec "$@"',
                str(folder)]
    else:  # EFBIG: no file of this process may grow past 20 kB
        if sh.which("prlimit") is None:
            pytest.skip("prlimit is not installed")
        wrap = ["prlimit", "--fsize=20000", "--"]
    # the preflight believes there is room (someone else fills the disk during the reshard)
    result = run_cli(["reshard", tiny_source, folder / "st", "--mesh", MESH, "--no-verify"], timeout=120,
                     env={"GROKWEIGHTS_FREE_SPACE_BYTES": str(10**12)}, wrap=wrap, memory=JAX_MEMORY)
    assert_clean_failure(result, codes=(1,), names=str(folder / "st"), fix=("cannot write to the store",
                                                                             "rerun `grokweights reshard`"))
