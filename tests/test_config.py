import json

import pytest

from grokweights.checkpoint.config import PRESETS, ModelConfig, ffn_size, preset
from grokweights.errors import ConfigError


def test_grok1_preset_matches_release():
    c = preset("grok-1")
    assert (c.num_layers, c.emb_size, c.num_q_heads, c.num_kv_heads, c.key_size) == (64, 6144, 48, 8, 128)
    assert (c.num_experts, c.num_selected_experts, c.vocab_size, c.scale_blocks) == (8, 2, 131072, 8)
    assert c.ffn_size == 32768


def test_tiny_has_the_same_structure():
    t = preset("tiny")
    g = preset("grok-1")
    assert t.num_experts == g.num_experts and t.num_selected_experts == g.num_selected_experts
    assert t.num_q_heads > t.num_kv_heads > 1  # grouped-query attention
    assert t.scale_blocks == g.scale_blocks


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name):
    c = PRESETS[name]
    assert ModelConfig.from_json(c.to_json()) == c
    assert json.loads(c.to_json())["emb_size"] == c.emb_size


def test_with_layers_keeps_width():
    c = preset("grok-1", layers=2)
    assert c.num_layers == 2 and c.emb_size == 6144
    with pytest.raises(ConfigError, match="cannot take 65 layers"):
        preset("grok-1").with_layers(65)


def test_unknown_and_missing_fields_are_named():
    data = preset("tiny").to_dict()
    data["bogus"] = 1
    with pytest.raises(ConfigError, match="unknown field.*bogus"):
        ModelConfig.from_dict(data, source="cfg.json")
    data = preset("tiny").to_dict()
    del data["emb_size"], data["vocab_size"]
    with pytest.raises(ConfigError, match="missing field.*emb_size, vocab_size"):
        ModelConfig.from_dict(data, source="cfg.json")


@pytest.mark.parametrize("field,value,message", [
    ("num_kv_heads", 3, "multiple of num_kv_heads"),
    ("num_selected_experts", 9, "exceeds num_experts"),
    ("key_size", 15, "even"),
    ("emb_size", 0, "positive integer"),
    ("scale_blocks", 7, "must divide"),
])
def test_invalid_configs(field, value, message):
    data = {**preset("tiny").to_dict(), field: value}
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(data)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")


def test_ffn_size_rounds_up_to_8():
    assert ffn_size(6144, 8) == 32768
    assert ffn_size(64, 8) == 344
