"""Mesh specs and partition rules: pure data, tested with literals."""

from __future__ import annotations

import json

import pytest

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import layout
from grokweights.errors import MeshError
from grokweights.sharding.mesh import (
    EXPERT_RULES,
    GROK1_RULES,
    MeshSpec,
    Rule,
    RuleSet,
    load_rules,
    shard_factors,
    spec_from_json,
    spec_to_json,
)


def test_mesh_parse_and_round_trip():
    mesh = MeshSpec.parse("data=2, model=4")
    assert mesh.names == ("data", "model") and mesh.shape == (2, 4) and mesh.size == 8
    assert str(mesh) == "data=2,model=4"
    assert MeshSpec.from_dict(json.loads(json.dumps(mesh.to_dict()))) == mesh
    assert MeshSpec.parse("expert=8,model=1").axis_size("expert") == 8
    assert mesh.coords(5) == {"data": 1, "model": 1}


@pytest.mark.parametrize("text", ["data2,model=4", "data=2,data=4", "data=0", "", "1x=2"])
def test_mesh_parse_rejects_bad_text(text):
    with pytest.raises(MeshError):
        MeshSpec.parse(text)


def test_grok1_rules_reproduce_the_release_partition_specs():
    specs = layout(preset("grok-1"))
    resolved = GROK1_RULES.resolve(s.key for s in specs)
    assert all(resolved[s.key] == s.partition_spec for s in specs)
    assert len(specs) == 770


def test_expert_rules_shard_the_expert_axis():
    resolved = EXPERT_RULES.resolve(s.key for s in layout(preset("tiny")))
    assert resolved["transformer/decoder_layer_1/moe/linear_1/w"] == ("expert", "model", None)
    assert resolved["transformer/decoder_layer_0/moe/linear_v/w"] == ("expert", None, "model")
    assert resolved["language_model/rms_norm/scale"] == (None,)


def test_shard_factors_and_errors_name_parameter_dimension_and_sizes():
    mesh = MeshSpec.parse("data=2,model=4")
    assert shard_factors("k", (8, 64, 344), (None, "data", "model"), mesh) == (1, 2, 4)
    assert shard_factors("k", (64, 512), (None, ("data", "model")), mesh) == (1, 8)
    assert shard_factors("k", (64, 8), ("data",), mesh) == (2, 1)
    with pytest.raises(MeshError, match=r"moe/linear/w: dimension 2 of size 344 cannot be split 16 ways"):
        shard_factors("moe/linear/w", (8, 64, 344), (None, None, "model"), MeshSpec.parse("model=16"))
    with pytest.raises(MeshError, match=r"axis 'expert', which the mesh data=2,model=4 lacks"):
        shard_factors("w", (8, 4), ("expert",), mesh)
    with pytest.raises(MeshError, match="used twice"):
        shard_factors("w", (8, 8), ("data", "data"), mesh)
    with pytest.raises(MeshError, match="has 3 entries but the tensor has 2"):
        shard_factors("w", (8, 8), ("data", None, None), mesh)


def test_rules_must_cover_every_parameter_and_match_something():
    keys = [s.key for s in layout(preset("tiny"))]
    partial = RuleSet("partial", (Rule(r"language_model/.*", (None,)),))
    with pytest.raises(MeshError, match="no partition rule of rule set 'partial' matches"):
        partial.resolve(keys)
    extra = RuleSet("extra", (*GROK1_RULES.rules, Rule("nothing/like/this", (None,))))
    with pytest.raises(MeshError, match="'nothing/like/this' of rule set 'extra' matches no parameter"):
        extra.resolve(keys)


def test_user_rules_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "rules": [r.to_dict() for r in EXPERT_RULES.rules]}))
    rules = load_rules(path)
    assert rules.name == "mine" and rules.rules == EXPERT_RULES.rules
    assert load_rules("grok1") is GROK1_RULES
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"pattern": "x", "spec": [3]}]}))
    with pytest.raises(MeshError, match="rule 0"):
        load_rules(bad)
    with pytest.raises(MeshError, match="not a file and not a built-in"):
        load_rules(tmp_path / "missing.json")


def test_spec_json_round_trip():
    spec = (None, ("data", "model"), "expert")
    assert spec_from_json(json.loads(json.dumps(spec_to_json(spec)))) == spec
