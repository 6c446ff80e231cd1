"""Hostile file types: a FIFO or a directory where a shard, manifest, config or rules file belongs.

Every reader opens regular files only (checked on the opened descriptor) and says what it found instead;
nothing blocks, nothing gives a traceback.
"""

from __future__ import annotations

import json
import os

import pytest

from grokweights.checkpoint.files import open_regular, read_json
from grokweights.checkpoint.hashing import sha256_file
from grokweights.checkpoint.shards import read_header, read_shard
from grokweights.errors import ConfigError, NotRegularFileError
from tests.hostile import PROBLEM_PREFIXES, assert_clean_failure, assert_tree_unchanged, run_cli, tree_state

SHARD = "tensor00003_000"


def _replace(path, kind: str) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()


@pytest.fixture(params=["fifo", "dir"])
def odd_shard(request, tiny_checkpoint):
    shard = tiny_checkpoint / "ckpt-0" / SHARD
    _replace(shard, request.param)
    return request.param, tiny_checkpoint, shard


def test_readers_refuse_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, word in ((fifo, "FIFO"), (tmp_path, "directory")):
        for read in (read_header, read_shard, sha256_file, open_regular):
            with pytest.raises(Exception) as info:
                read(path)
            assert word in str(info.value) and str(path) in str(info.value), read
        with pytest.raises(ConfigError, match=word):
            read_json(path, error=ConfigError)


def test_not_regular_file_error_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        sha256_file(tmp_path)
    assert issubclass(NotRegularFileError, OSError)


def test_inspect(odd_shard):
    kind, folder, shard = odd_shard
    result = run_cli(["inspect", folder], timeout=30)
    assert_clean_failure(result, names=str(shard), codes=(1,), prefixes=PROBLEM_PREFIXES,
                         fix="FIFO" if kind == "fifo" else "directory")


def test_manifest_create(odd_shard, tmp_path):
    kind, folder, shard = odd_shard
    before = tree_state(folder)
    result = run_cli(["manifest", "create", folder, "-o", tmp_path / "m.json"], timeout=30)
    assert_clean_failure(result, names=str(shard), fix="replace it")
    assert not (tmp_path / "m.json").exists()
    assert_tree_unchanged(folder, before)


def test_verify_when_manifest_says_empty(odd_shard):
    kind, folder, shard = odd_shard
    manifest = folder / "grokweights-manifest.json"
    data = json.loads(manifest.read_text())
    for entry in data["shards"]:
        if entry["path"].endswith(SHARD):
            entry["size"] = 0 if kind == "fifo" else shard.stat().st_size
    data["total_size"] = sum(e["size"] for e in data["shards"])
    manifest.write_text(json.dumps(data))
    for extra in ([], ["--deep"]):
        result = run_cli(["verify", folder, *extra], timeout=30)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result
        line = next(line for line in result.stdout.splitlines() if SHARD in line)
        assert "unreadable" in line and "not a regular file" in line, result.stdout


def test_reshard_refuses_fifo_shard(tiny_checkpoint, tmp_path):
    shard = tiny_checkpoint / "ckpt-0" / SHARD
    _replace(shard, "fifo")
    result = run_cli(["reshard", tiny_checkpoint, tmp_path / "store", "--mesh", "data=1,model=1"], timeout=120,
                     memory=None)
    assert_clean_failure(result, names=str(shard), fix="FIFO")


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_config_and_rules_files(tmp_path, tiny_checkpoint, kind):
    odd = tmp_path / "odd.json"
    if kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.mkdir()
    if kind == "fifo":  # click refuses a directory for --config itself
        result = run_cli(["inspect", tiny_checkpoint, "--config", odd], timeout=30)
        assert_clean_failure(result, names=str(odd), fix="--preset")
    result = run_cli(["plan", "--mesh", "data=1,model=8", "--rules", odd], timeout=30)
    assert_clean_failure(result, names=str(odd), fix="built-in")


def test_manifest_file_fifo(tmp_path, tiny_checkpoint):
    fifo = tiny_checkpoint / "grokweights-manifest.json"
    fifo.unlink()
    os.mkfifo(fifo)
    result = run_cli(["verify", tiny_checkpoint], timeout=30)
    assert_clean_failure(result, names=str(fifo), fix="FIFO")


def test_fingerprint_files_are_read_as_bounded_regular_json(tmp_path):
    """A fingerprint (smoke --expect) that is a FIFO, nested too deeply or missing: one UsageError naming it."""
    from grokweights.errors import UsageError
    from grokweights.runtime.fingerprint import Fingerprint

    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "deep.json").write_text("[" * 100_000)
    for name, said in (("fifo.json", "not a regular file"), ("deep.json", "nested too deeply"),
                       ("none.json", "not found")):
        with pytest.raises(UsageError, match=f"{name}: .*{said}"):
            Fingerprint.load(tmp_path / name)
