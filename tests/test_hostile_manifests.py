"""Hostile manifests and config files: JSON that breaks the parser, paths that are not normalised, wrong types.

Every case is one error line naming the file and the fix (exit 1 or 2), never a traceback.
"""

from __future__ import annotations

import json

import pytest

from grokweights.checkpoint.manifest import load_manifest
from grokweights.errors import ManifestError
from tests.hostile import assert_clean_failure, run_cli

MANIFEST = "grokweights-manifest.json"

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "1" * 5000


def _edit(folder, change) -> None:
    path = folder / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("text", [DEEP, '{"schema": ' + HUGE_INT + "}", "\xff\xfe{", "{"],
                         ids=["deep", "5000-digits", "not-utf8", "truncated"])
def test_broken_json_manifest(tiny_checkpoint, text):
    path = tiny_checkpoint / MANIFEST
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ManifestError):
        load_manifest(path)
    for args in (["verify", tiny_checkpoint], ["manifest", "show", path], ["inspect", tiny_checkpoint]):
        assert_clean_failure(run_cli(args, timeout=30), names=str(path), fix="fix it")


@pytest.mark.parametrize("text", [DEEP, '{"num_layers": ' + HUGE_INT + "}", "\xff{"], ids=["deep", "digits", "utf8"])
def test_broken_json_config(tmp_path, tiny_checkpoint, text):
    config = tmp_path / "config.json"
    config.write_bytes(text.encode("latin-1"))
    for args in (["inspect", tiny_checkpoint, "--config", config], ["plan", "--mesh", "model=8", "--config", config]):
        assert_clean_failure(run_cli(args, timeout=30), names=str(config), fix="--preset")


def test_config_field_of_5000_digits_in_json_object(tmp_path, tiny_checkpoint):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_layers": 10**4000}))  # written by Python: 4001 digits, readable
    assert_clean_failure(run_cli(["inspect", tiny_checkpoint, "--config", config], timeout=30), names=str(config))


@pytest.mark.parametrize("path", ["", ".", "ckpt-0//tensor00000_000", "./ckpt-0/tensor00000_000",
                                  "ckpt-0/tensor\u0000", "ckpt-0\\tensor00000_000", "ckpt-0/tensor00000_000/"])
def test_shard_paths_must_be_normalised(tiny_checkpoint, path):
    _edit(tiny_checkpoint, lambda d: d["shards"][0].__setitem__("path", path))
    with pytest.raises(ManifestError, match="relative path"):
        load_manifest(tiny_checkpoint / MANIFEST)
    result = run_cli(["verify", tiny_checkpoint], timeout=30)
    assert_clean_failure(result, names=[str(tiny_checkpoint / MANIFEST), "shards[0].path"])


@pytest.mark.parametrize("field, value", [("schema_version", True), ("schema_version", 1.0),
                                          ("schema_version", "1")])
def test_schema_version_must_be_the_integer(tiny_checkpoint, field, value):
    _edit(tiny_checkpoint, lambda d: d.__setitem__(field, value))
    assert_clean_failure(run_cli(["verify", tiny_checkpoint], timeout=30), names=[str(tiny_checkpoint / MANIFEST),
                                                                                   "schema_version"])


def test_shard_size_of_many_digits(tiny_checkpoint):
    _edit(tiny_checkpoint, lambda d: d["shards"][0].__setitem__("size", 10**3000))
    line = assert_clean_failure(run_cli(["verify", tiny_checkpoint], timeout=30), names="shards[0].size")
    assert len(line) < 600
