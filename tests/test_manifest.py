import json

import pytest

from grokweights.checkpoint.config import ModelConfig, preset
from grokweights.checkpoint.layout import layout
from grokweights.checkpoint.manifest import Manifest, find_local_manifest, load_manifest
from grokweights.checkpoint.manifest_ops import create_manifest, pin_manifest
from grokweights.constants import LOCAL_MANIFEST_NAME
from grokweights.errors import ConfigError, ManifestError, VerificationError

from .helpers import DATA


def test_shipped_grok1_manifest_is_exact():
    m = load_manifest("grok-1")
    release = json.loads((DATA / "grok1_layout.json").read_text())
    assert len(m.shards) == 770 and m.total_size == 318_239_886_140
    for entry, fact in zip(m.shards, release):
        assert entry.path == f"ckpt-0/{fact['file']}"
        assert entry.size == fact["expected_file_size"]
        assert entry.tensor.to_dict() == fact
        assert entry.sha256 is None  # no per-file hashes are published
    assert m.sources.infohash_v1 == "5f96d43576e3d386c9ba65b883210a393b68210e"
    assert m.sources.magnet.startswith("magnet:?xt=urn:btih:5f96d43576e3d386c9ba65b883210a393b68210e")
    assert m.config == preset("grok-1")
    assert "no per-file checksums" in m.notes


def test_round_trip(tiny_source, tmp_path):
    m = find_local_manifest(tiny_source)
    m.save(tmp_path / "m.json")
    again = load_manifest(tmp_path / "m.json")
    assert again.to_dict() == m.to_dict()
    assert Manifest.from_dict(m.to_dict()).shards == m.shards


def _broken(tmp_path, mutate):
    data = load_manifest("grok-1").to_dict()
    data["shards"] = data["shards"][:20]
    data.pop("total_size")
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["shards"][12].__setitem__("size", "12"), r"shards\[12\]\.size: expected an integer, found '12'"),
    (lambda d: d["shards"][3].__setitem__("sha256", "xyz"), r"shards\[3\]\.sha256: expected 64 lowercase hex"),
    (lambda d: d["shards"][5].pop("path"), r"shards\[5\]\.path: expected a string, found null"),
    (lambda d: d["shards"][7]["tensor"].pop("shape"), r"shards\[7\]\.tensor\.shape"),
    (lambda d: d["shards"][1].__setitem__("path", "../etc/passwd"), r"shards\[1\]\.path: expected a relative path"),
    (lambda d: d.__setitem__("schema_version", 99), r"schema_version: expected 1"),
    (lambda d: d.__setitem__("schema", "other"), r"schema: expected"),
    (lambda d: d["config"].pop("emb_size"), r"missing field\(s\) emb_size"),
    (lambda d: d.__setitem__("total_size", 5), r"total_size: expected the sum"),
    (lambda d: d["shards"].append(dict(d["shards"][0])), r"shards\[20\]\.path: expected a path listed once"),
])
def test_malformed_manifests_name_the_field_and_entry(tmp_path, mutate, message):
    path = _broken(tmp_path, mutate)
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_invalid_json_and_unknown_names(tmp_path):
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path / "x.json")
    with pytest.raises(ManifestError, match="no manifest 'grok-2'.*grok-1"):
        load_manifest("grok-2")


def test_create_infers_a_preset_and_hashes(tiny_checkpoint):
    m = create_manifest(tiny_checkpoint)
    assert m.config == preset("tiny") and m.hashed == len(m.shards) == 26
    assert m.shards[0].path == "ckpt-0/tensor00000_000"


def test_create_refuses_ambiguous_shapes(tmp_path):
    from grokweights.checkpoint.synth import synthesize

    odd = ModelConfig(num_layers=1, emb_size=32, num_q_heads=4, num_kv_heads=2, key_size=8, num_experts=4,
                      num_selected_experts=2, widening_factor=4, vocab_size=64, scale_blocks=2)
    synthesize(tmp_path, odd)
    with pytest.raises(ConfigError, match="key_size, num_q_heads, num_kv_heads, num_selected_experts") as info:
        create_manifest(tmp_path)
    assert "--config" in str(info.value)
    assert create_manifest(tmp_path, config=odd).config == odd


def test_create_refuses_a_checkpoint_that_disagrees_with_the_layout(tiny_checkpoint):
    ckpt = tiny_checkpoint / "ckpt-0"
    (ckpt / "tensor00003_000").rename(tiny_checkpoint / "moved")
    with pytest.raises(VerificationError, match="tensor00003_000: missing"):
        create_manifest(tiny_checkpoint, config=preset("tiny"))


def test_pin_fills_missing_hashes_and_refuses_to_change_one(tiny_checkpoint, tmp_path):
    full = find_local_manifest(tiny_checkpoint)
    data = full.to_dict()
    for shard in data["shards"][::2]:
        shard["sha256"] = None
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(data))
    pinned = pin_manifest(tiny_checkpoint, partial, output=tmp_path / "pinned.json")
    assert [s.sha256 for s in pinned.shards] == [s.sha256 for s in full.shards]
    assert load_manifest(tmp_path / "pinned.json").hashed == 26
    # a copy that differs from a recorded hash is refused, and the manifest is left as it was
    victim = tiny_checkpoint / "ckpt-0" / "tensor00001_000"
    blob = bytearray(victim.read_bytes())
    blob[-10] ^= 0xFF
    victim.write_bytes(bytes(blob))
    before = partial.read_text()
    with pytest.raises(ManifestError, match="tensor00001_000: sha256 .* refusing to change a recorded hash"):
        pin_manifest(tiny_checkpoint, partial)
    assert partial.read_text() == before


def test_find_local_manifest_accepts_ckpt_dir(tiny_source):
    assert find_local_manifest(tiny_source / "ckpt-0").name == "tiny-test"
    assert (tiny_source / LOCAL_MANIFEST_NAME).exists()
    assert len(layout(find_local_manifest(tiny_source).config)) == 26
