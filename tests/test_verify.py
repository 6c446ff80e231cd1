import os

import pytest

from grokweights.checkpoint.manifest import find_local_manifest, load_manifest
from grokweights.checkpoint.paths import resolve_checkpoint_dir
from grokweights.checkpoint.verify import verify
from grokweights.errors import GrokWeightsError


def _flip(path, offset=-7):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_clean_checkpoint_passes_strictly(tiny_checkpoint):
    report = verify(tiny_checkpoint, find_local_manifest(tiny_checkpoint), jobs=2, deep=True)
    assert report.ok and report.strict_ok and report.counts() == {"ok": 26}
    assert report.bytes_hashed == sum(p.stat().st_size for p in (tiny_checkpoint / "ckpt-0").iterdir())


@pytest.mark.parametrize("jobs", [1, 2])
def test_finds_exactly_the_bad_shards(tiny_checkpoint, jobs):
    ckpt = tiny_checkpoint / "ckpt-0"
    manifest = find_local_manifest(tiny_checkpoint)
    _flip(ckpt / "tensor00004_000")
    (ckpt / "tensor00009_000").unlink()
    with open(ckpt / "tensor00011_000", "ab") as f:
        f.write(b"\0")
    (ckpt / "tensor00099_000").write_bytes(b"stray")
    report = verify(tiny_checkpoint, manifest, jobs=jobs)
    failed = {r.path: r.status for r in report.failures}
    assert failed == {"ckpt-0/tensor00004_000": "sha256", "ckpt-0/tensor00009_000": "missing",
                      "ckpt-0/tensor00011_000": "size", "ckpt-0/tensor00099_000": "extra"}
    assert not report.ok
    sha = next(r for r in report.failures if r.status == "sha256")
    assert sha.expected == manifest.shard("ckpt-0/tensor00004_000").sha256 and sha.actual != sha.expected


def test_unknown_hashes_are_unverified_never_passed(tiny_checkpoint, tmp_path):
    data = find_local_manifest(tiny_checkpoint).to_dict()
    data["shards"][0]["sha256"] = None
    path = tmp_path / "m.json"
    import json

    path.write_text(json.dumps(data))
    report = verify(tiny_checkpoint, load_manifest(path))
    assert report.ok and not report.strict_ok
    assert [r.path for r in report.unverified] == ["ckpt-0/tensor00000_000"]
    fast = verify(tiny_checkpoint, load_manifest(path), fast=True)
    assert len(fast.unverified) == 26 and fast.bytes_hashed == 0


def test_deep_checks_headers(tiny_checkpoint):
    ckpt = tiny_checkpoint / "ckpt-0"
    manifest = find_local_manifest(tiny_checkpoint)
    # same size, different content: swap two same-sized shards of different tensors
    a, b = ckpt / "tensor00005_000", ckpt / "tensor00008_000"  # attention key and value: same shapes
    assert a.stat().st_size == b.stat().st_size
    c, d = ckpt / "tensor00009_000", ckpt / "tensor00010_000"  # two norms
    os.replace(c, ckpt / "tmp")
    os.replace(d, c)
    os.replace(ckpt / "tmp", d)
    shallow = verify(tiny_checkpoint, manifest, fast=True)
    assert shallow.ok
    _flip(ckpt / "tensor00013_000", offset=20)  # corrupt the header of the router's shard
    deep = verify(tiny_checkpoint, manifest, fast=True, deep=True)
    assert {r.path: r.status for r in deep.failures} == {"ckpt-0/tensor00013_000": "header"}


def test_only_checks_a_subset(tiny_checkpoint):
    (tiny_checkpoint / "ckpt-0" / "tensor00020_000").unlink()
    report = verify(tiny_checkpoint, find_local_manifest(tiny_checkpoint), only=["ckpt-0/tensor00000_000"])
    assert report.ok and len(report.results) == 1


def test_resolve_checkpoint_dir(tiny_checkpoint, tmp_path):
    assert resolve_checkpoint_dir(tiny_checkpoint) == tiny_checkpoint / "ckpt-0"
    assert resolve_checkpoint_dir(tiny_checkpoint / "ckpt-0") == tiny_checkpoint / "ckpt-0"
    with pytest.raises(GrokWeightsError, match="no checkpoint here"):
        resolve_checkpoint_dir(tmp_path)
