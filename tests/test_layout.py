import json

import pytest

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import TensorSpec, layer_indices, layout, parse_layers, select
from grokweights.errors import UsageError

from .helpers import DATA


def test_grok1_layout_reproduces_the_release_entry_for_entry():
    expected = json.loads((DATA / "grok1_layout.json").read_text())
    got = [s.to_dict() for s in layout(preset("grok-1"))]
    assert len(got) == 770
    for e, g in zip(expected, got):
        assert g == e, e["file"]
    assert sum(s.expected_file_size for s in layout(preset("grok-1"))) == 318_239_886_140


def test_layers_sort_as_strings():
    specs = layout(preset("grok-1"))
    layers = [s.layer for s in specs[2::12]]
    assert layers[:4] == [0, 1, 10, 11] and layers[-3:] == [7, 8, 9]


def test_scale_blocks_follow_the_input_axis_split():
    by_key = {s.key: s for s in layout(preset("tiny"))}
    assert by_key["transformer/decoder_layer_0/moe/linear_1/w"].scales_shape == (8, 8, 64)
    assert by_key["transformer/decoder_layer_0/multi_head_attention/linear/w"].scales_shape == (8, 64)
    assert by_key["transformer/decoder_layer_0/moe/linear/w"].scales_shape == (8, 1, 344)


def test_spec_json_round_trip():
    for spec in layout(preset("tiny")):
        assert TensorSpec.from_dict(spec.to_dict()) == spec


def test_parse_layers():
    assert parse_layers("0-3,7, 9") == (0, 1, 2, 3, 7, 9)
    with pytest.raises(UsageError, match="layer 64 does not exist"):
        parse_layers("60-64", num_layers=64)
    with pytest.raises(UsageError, match="bad layer range"):
        parse_layers("a-b")
    with pytest.raises(UsageError, match="5 < 9|9"):
        parse_layers("9-5")


def test_select_layers_keeps_shared_tensors():
    specs = layout(preset("grok-1", layers=12))
    chosen = select(specs, layers=[0, 10])
    assert {s.layer for s in chosen} == {None, 0, 10}
    assert len(chosen) == 2 + 24
    assert len(select(specs, layers=[1], include_shared=False)) == 12


def test_layer_indices_accepts_text_indices_or_none():
    assert layer_indices(None, num_layers=3) == (0, 1, 2)
    assert layer_indices("0,2", num_layers=3) == layer_indices([2, 0, 2], num_layers=3) == (0, 2)
    with pytest.raises(UsageError, match="layer 3, 7 does not exist: the model has layers 0-2"):
        layer_indices([1, 3, 7], num_layers=3)
