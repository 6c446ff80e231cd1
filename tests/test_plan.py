"""The reshard plan as pure data: chunking, scales re-blocking, bytes per device, JSON round-trip."""

from __future__ import annotations

import math

import pytest

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import layout
from grokweights.errors import MeshError, UsageError
from grokweights.sharding.mesh import EXPERT_RULES, GROK1_RULES, MeshSpec
from grokweights.sharding.plan import (
    MAX_CHUNK_BYTES,
    ReshardPlan,
    chunk_shape_for,
    parse_compression,
    plan_reshard,
    stored_scale_blocks,
)

MiB = 1024 * 1024
TINY = preset("tiny")


def _plan(mesh: str, rules=GROK1_RULES, config=TINY, **kw) -> ReshardPlan:
    return plan_reshard(layout(config), MeshSpec.parse(mesh), rules, config=config, **kw)


def test_chunk_shape_literals():
    # a small shard is one chunk
    assert chunk_shape_for((8, 32, 86), (8, 64, 344), 1) == (8, 32, 86)
    # a big shard is split on its leading dimension first, by smallest prime factors
    assert chunk_shape_for((8, 6144, 4096), (8, 6144, 32768), 1) == (1, 3072, 4096)
    assert chunk_shape_for((131072, 768), (131072, 6144), 4) == (4096, 768)
    assert chunk_shape_for((131072, 768), (131072, 6144), 4, 32 * MiB) == (8192, 768)
    # ... and further dimensions when the leading one is exhausted
    assert chunk_shape_for((1, 6144, 32768), (8, 6144, 32768), 1) == (1, 384, 32768)


@pytest.mark.parametrize("mesh,rules", [("data=1,model=8", GROK1_RULES), ("data=2,model=4", GROK1_RULES),
                                        ("data=8,model=1", GROK1_RULES), ("expert=8,model=1", EXPERT_RULES)])
def test_every_shard_is_whole_chunks(mesh, rules):
    plan = _plan(mesh, rules)
    for array in plan.arrays:
        shard = plan.shard_shape(array)
        assert all(s % c == 0 for s, c in zip(shard, array.chunk_shape, strict=True)), array.store_path
        assert array.chunk_bytes <= MAX_CHUNK_BYTES


def test_grok1_full_width_plan_chunks_are_between_1_and_16_mib():
    config = preset("grok-1", layers=1)
    plan = _plan("data=1,model=8", config=config)
    big = [a for a in plan.arrays if a.nbytes >= 64 * MiB]
    assert big and all(1 * MiB <= a.chunk_bytes <= 16 * MiB for a in big)
    emb = plan.array("language_model/in_out_embed/embeddings")
    assert plan.shard_shape(emb) == (131072, 768) and emb.chunk_shape == (4096, 768)
    # 8 devices each read one eighth of every sharded array and all of the replicated ones
    replicated = sum(a.nbytes for a in plan.arrays if plan.factors(a) == (1,) * len(a.shape))
    assert plan.bytes_per_device == ((plan.total_bytes - replicated) // 8 + replicated,) * 8


def test_scales_are_reblocked_for_the_target_split():
    # source blocks of rows/nb rows, target shards of rows/k rows: blocks of gcd(...) rows
    assert stored_scale_blocks(32768, 8, 8) == 8
    assert stored_scale_blocks(32768, 8, 4) == 8
    assert stored_scale_blocks(32768, 8, 16) == 16
    assert stored_scale_blocks(6144, 1, 2) == 2
    assert stored_scale_blocks(344, 8, 1) == 8
    plan = _plan("data=2,model=4")
    scales = plan.array("transformer/decoder_layer_0/moe/linear/w/scales")
    assert scales.shape == (8, 2, 344) and scales.source_blocks == 1 and scales.dtype == "float32"
    linear_1 = plan.array("transformer/decoder_layer_0/moe/linear_1/w/scales")
    assert linear_1.shape == (8, 8, 64) and plan.shard_shape(linear_1) == (8, 2, 32)
    assert _plan("data=8,model=1").array("transformer/decoder_layer_0/multi_head_attention/key/w/scales").shape \
        == (8, 32)


def test_bfloat16_plan_stores_dequantised_arrays():
    plan = _plan("data=1,model=8", dtype="bfloat16", compression="zstd:3")
    roles = {a.role for a in plan.arrays}
    assert roles == {"array"}
    w = plan.array("transformer/decoder_layer_0/moe/linear/w")
    assert w.dtype == "bfloat16" and w.source_kind == "quantized" and w.codec == "zstd:3"


def test_layers_selection_keeps_shared_tensors():
    plan = _plan("data=1,model=8", layers=[1])
    keys = plan.keys
    assert "language_model/in_out_embed/embeddings" in keys and "language_model/rms_norm/scale" in keys
    assert not any("decoder_layer_0/" in k for k in keys) and any("decoder_layer_1/" in k for k in keys)
    assert plan.layers == (1,)


def test_plan_json_round_trip():
    plan = _plan("data=2,model=4", layers=[0], compression="zstd")
    again = ReshardPlan.from_json(plan.to_json())
    assert again == plan and again.to_dict() == plan.to_dict()
    assert again.total_bytes == sum(math.prod(a.shape) * {"int8": 1, "float32": 4, "bfloat16": 2}[a.dtype]
                                    for a in plan.arrays)


def test_plan_errors():
    with pytest.raises(MeshError, match="dimension 2 of size 344 cannot be split 16 ways"):
        _plan("data=1,model=16")
    with pytest.raises(MeshError, match="lacks"):
        _plan("model=8")
    with pytest.raises(UsageError, match="bad dtype"):
        _plan("data=1,model=8", dtype="float16")


def test_parse_compression():
    assert parse_compression("none") == "none"
    assert parse_compression("zstd") == "zstd:1"
    assert parse_compression("ZSTD:19") == "zstd:19"
    for bad in ("gzip", "zstd:0", "zstd:x", "zstd:23"):
        with pytest.raises(UsageError):
            parse_compression(bad)
