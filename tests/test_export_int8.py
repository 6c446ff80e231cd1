"""``export --dtype int8``: the release's int8 as compressed-tensors pack-quantized, proven with compressed-tensors.

compressed-tensors (and the torch it pulls in) is a test-only extra (``int8-test``); without it the tests that
need it are skipped with a message saying how to install it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from grokweights.checkpoint.layout import layout
from grokweights.engines import export, plan_tensors
from grokweights.engines._int8 import int8_groups, quantization_config
from grokweights.errors import UsageError

from .export_reference import HF_ROLES, SGLANG_ROLES, TINY4, reference_forward, rel_l2

TOKENS = np.array([[5, 17, 301, 42, 7, 99, 3, 250, 11, 64, 400, 2],
                   [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 511, 12]], dtype=np.int32)
_NO_CT = "compressed-tensors is not installed: pip install -e '.[int8-test]' (it pulls in torch)"


def _compressed_tensors():
    try:
        import compressed_tensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        pytest.skip(_NO_CT)


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize
    from grokweights.constants import LOCAL_MANIFEST_NAME

    root = tmp_path_factory.mktemp("tiny4")
    synthesize(root, TINY4, seed=3)
    create_manifest(root, name="tiny4", config=TINY4).save(root / LOCAL_MANIFEST_NAME)  # export verifies
    return root


@pytest.fixture(scope="module")
def dequantised(tiny4):
    """Each quantized checkpoint tensor dequantised in float32, in (out, in) orientation (experts stacked)."""
    from grokweights.engines._source import CheckpointSource

    source = CheckpointSource(tiny4, TINY4)
    return {spec.key: np.swapaxes(source.open(spec.key).dequantize(np.float32), -1, -2)
            for spec in layout(TINY4) if spec.kind == "quantized"}


def _load(folder):
    from safetensors.numpy import load_file

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors = {}
    for name in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(folder / name))
    assert set(tensors) == set(index["weight_map"])
    return tensors, json.loads((folder / "config.json").read_text())


def test_groups_follow_the_release_blocks():
    from grokweights.checkpoint.config import preset

    assert int8_groups(preset("grok-1")) == {"q": 0, "k": 0, "v": 0, "o": 128, "gate": 128, "up": 128, "down": 128}
    import dataclasses

    assert set(int8_groups(dataclasses.replace(preset("tiny"), scale_blocks=1)).values()) == {0}  # channel scales
    assert int8_groups(TINY4)["o"] == 16 and int8_groups(TINY4)["down"] == 2  # gcd(64, 344 / 4)


def test_grok1_int8_is_the_int8_payload_plus_scales():
    """Full Grok-1 (planned): the int8 values, their scales, the bf16 embedding, f32 norms and router."""
    from grokweights.checkpoint.config import preset

    config = preset("grok-1")
    tensors = plan_tensors(config, "hf", "int8", range(config.num_layers))
    payload = sum(math.prod(s.shape) for s in layout(config) if s.kind == "quantized")  # int8 values
    packed = sum(t.nbytes for t in tensors if t.part == "packed")
    scales = sum(t.nbytes for t in tensors if t.part == "scale")
    assert packed == payload
    total = sum(t.nbytes for t in tensors)
    assert total < 1.01 * (payload + scales + config.vocab_size * config.emb_size * 2 + 2**20 * config.num_layers)
    print(f"grok-1 int8 (hf): {total / 1e9:.1f} GB, int8 values {payload / 1e9:.1f} GB, scales {scales / 1e9:.2f} GB")


@pytest.mark.parametrize(("fmt", "roles"), [("sglang", SGLANG_ROLES), ("hf", HF_ROLES)])
def test_compressed_tensors_decompresses_every_weight_to_the_dequantised_release(tiny4, dequantised, tmp_path, fmt,
                                                                                 roles):
    """compressed-tensors assigns each layer its scheme from config.json and its decompression of every exported
    weight equals the checkpoint's dequantised weight bit for bit in float32."""
    _compressed_tensors()
    export(tiny4, tmp_path / fmt, format=fmt, dtype="int8", config=TINY4, shard_size="200K")
    tensors, config = _load(tmp_path / fmt)
    decompressed = _decompress(tensors, config["quantization_config"])
    assert config["torch_dtype"] == "bfloat16" and config["quantization_config"]["format"] == "pack-quantized"
    checked = 0
    for i in range(TINY4.num_layers):
        pre = f"transformer/decoder_layer_{i}"
        for role, key in (("q", "multi_head_attention/query"), ("k", "multi_head_attention/key"),
                          ("v", "multi_head_attention/value"), ("o", "multi_head_attention/linear"),
                          ("gate", "moe/linear"), ("up", "moe/linear_v"), ("down", "moe/linear_1")):
            want = dequantised[f"{pre}/{key}/w"]
            for e in range(TINY4.num_experts) if want.ndim == 3 else [None]:
                name = roles[role].format(i=i, e=e).removesuffix(".weight")
                np.testing.assert_array_equal(decompressed[name], want if e is None else want[e], err_msg=name)
                checked += 1
    assert checked == len(decompressed) == TINY4.num_layers * (4 + 3 * TINY4.num_experts)


def _decompress(tensors: dict[str, np.ndarray], qconfig: dict) -> dict[str, np.ndarray]:
    """Every quantized layer decompressed by compressed-tensors, the scheme chosen by its own config matching.

    A skeleton of ``torch.nn.Linear`` modules named as the export names them (plus the router and lm_head,
    which must stay unquantised) is given the quantization config; each module's compressed tensors are then
    decompressed with the scheme compressed-tensors attached to it (scales in float32: its dequantizer computes
    in the scale's dtype).
    """
    import torch
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

    bases = sorted({n.rsplit(".", 1)[0] for n in tensors if n.endswith(".weight_packed")})
    plain = [n.removesuffix(".weight") for n in tensors if n.endswith("gate.weight")] + ["lm_head"]
    model = torch.nn.Module()
    for name in bases + plain:
        parent = model
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        shape = tuple(int(n) for n in tensors[f"{name}.weight_shape"]) if name in bases else (8, 8)
        parent.add_module(leaf, torch.nn.Linear(shape[1], shape[0], bias=False, device="meta"))
    apply_quantization_config(model, QuantizationConfig.model_validate(qconfig), show_progress=False)
    out = {}
    for name in plain:
        assert getattr(model.get_submodule(name), "quantization_scheme", None) is None, f"{name} is quantized"
    for name in bases:
        scheme = model.get_submodule(name).quantization_scheme
        assert scheme.format == "pack-quantized" and scheme.weights.num_bits == 8 and scheme.weights.symmetric
        state = {"weight_packed": torch.from_numpy(tensors[f"{name}.weight_packed"]),
                 "weight_scale": torch.from_numpy(tensors[f"{name}.weight_scale"].astype(np.float32)),
                 "weight_shape": torch.from_numpy(tensors[f"{name}.weight_shape"])}
        if scheme.weights.strategy == "group":
            assert state["weight_scale"].shape[1] * scheme.weights.group_size == state["weight_shape"][1]
        else:
            assert scheme.weights.strategy == "channel" and state["weight_scale"].shape[1] == 1
        out[name] = PackedQuantizationCompressor.decompress(state, scheme)["weight"].numpy()
    return out


@pytest.mark.parametrize(("fmt", "roles"), [("sglang", SGLANG_ROLES), ("hf", HF_ROLES)])
def test_forward_over_decompressed_weights_matches_grokweights_forward(tiny4, tmp_path, fmt, roles):
    """A numpy forward over the decompressed tensors (by the target's names) reproduces grokweights.forward on the
    checkpoint's weights with the embedding rounded to bfloat16 (the int8 export's one rounding)."""
    _compressed_tensors()
    import jax
    import jax.numpy as jnp

    import grokweights
    from grokweights.checkpoint.dtypes import bfloat16

    export(tiny4, tmp_path / fmt, format=fmt, dtype="int8", config=TINY4)
    tensors, config = _load(tmp_path / fmt)
    weights = {**tensors, **{f"{k}.weight": v for k, v in _decompress(tensors, config["quantization_config"]).items()}}
    logits = reference_forward(TOKENS, TINY4, lambda role, i=None, e=None: np.asarray(
        weights[roles[role].format(i=i, e=e)], dtype=np.float64), TINY4.num_layers)
    params = grokweights.load(tiny4, config=TINY4)
    embed = params["language_model/in_out_embed"]
    rounded = np.asarray(embed["embeddings"]).astype(bfloat16()).astype(np.float32)
    embed["embeddings"] = jax.device_put(rounded, embed["embeddings"].sharding)
    want = np.asarray(grokweights.forward(params, TOKENS, TINY4, dtype=jnp.float32))
    err = rel_l2(logits, want)
    print(f"{fmt} int8: rel L2 vs grokweights.forward = {err:.2e}")
    assert err < 1e-5 and (logits.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize(("fmt", "moe", "o_proj", "router"), [
    ("sglang", "model.layers.3.block_sparse_moe.experts", "model.layers.3.self_attn.o_proj",
     "model.layers.3.block_sparse_moe.gate"),
    ("hf", "model.layers.3.moe_block.experts", "model.layers.3.attn.o_proj", "model.layers.3.moe_block.gate")])
def test_quantization_config_targets_the_names_engines_probe(fmt, moe, o_proj, router):
    """Specific groups first, a Linear catch-all last; the expert group also matches the names vLLM's and SGLang's
    fused-MoE loaders probe (``<experts>.0.gate_proj`` ...), so all three projections get one scheme."""
    from grokweights.checkpoint.config import preset

    config = quantization_config(fmt, preset("grok-1"))
    groups = list(config["config_groups"].values())
    assert [g["weights"]["strategy"] for g in groups] == ["group", "group", "channel"]
    assert [g["weights"]["group_size"] for g in groups] == [128, 128, None] and groups[-1]["targets"] == ["Linear"]
    experts, out = groups[0]["targets"][0], groups[1]["targets"][0]
    names = [f"{moe}.0.{p}" for p in ("gate_proj", "up_proj", "down_proj")] + [
        f"{moe}.7.{p}" for p in (("w1", "w2", "w3") if fmt == "sglang" else ("linear", "linear_v", "linear_1"))]
    try:
        from compressed_tensors.utils.match import match_name
    except ImportError:
        import re

        def match_name(name, target):
            return re.match(target.removeprefix("re:"), name) is not None
    assert all(match_name(n, experts) for n in names)
    assert match_name(o_proj, out) and not match_name(o_proj, experts) and not match_name(router, experts)
    assert not match_name(o_proj.replace("o_proj", "q_proj"), out)
    assert any(match_name(router, t) for t in config["ignore"]) and "lm_head" in config["ignore"]


def test_int8_export_bytes(tiny4, tmp_path):
    """The packed words hold the release's int8 values + 128, byte for byte; the embedding is bf16."""
    from grokweights.engines._source import CheckpointSource

    export(tiny4, tmp_path / "hf", format="hf", dtype="int8", config=TINY4)
    tensors, _ = _load(tmp_path / "hf")
    raw = CheckpointSource(tiny4, TINY4).open("transformer/decoder_layer_1/moe/linear_1/w").weight[3]
    packed = tensors["model.layers.1.moe_block.experts.3.linear_1.weight_packed"]
    assert packed.dtype == np.int32 and packed.shape == (raw.shape[1], raw.shape[0] // 4)
    np.testing.assert_array_equal(packed.view(np.uint8), (np.asarray(raw).T.astype(np.int16) + 128).astype(np.uint8))
    assert str(tensors["model.embed_tokens.weight"].dtype) == "bfloat16"
    assert tensors["model.layers.1.moe_block.gate.weight"].dtype == np.float32


def test_int8_from_a_store_is_the_same_and_bf16_stores_are_refused(tiny4, tmp_path):
    import filecmp

    from grokweights.store import reshard

    reshard(tiny4, tmp_path / "s", "data=2,model=4", config=TINY4, verify=False)
    reshard(tiny4, tmp_path / "b", "data=2,model=4", config=TINY4, verify=False, dtype="bfloat16")
    a = export(tiny4, tmp_path / "a", format="sglang", dtype="int8", config=TINY4)
    b = export(tmp_path / "s", tmp_path / "c", format="sglang", dtype="int8")
    for x, y in zip(a.files, b.files, strict=True):
        assert filecmp.cmp(x, y, shallow=False)
    with pytest.raises(UsageError, match="the store holds bfloat16 weights"):
        export(tmp_path / "b", tmp_path / "d", format="sglang", dtype="int8")


@pytest.mark.parametrize(("fmt", "dtype", "match"), [("gguf", "int8", "dtype int8 is compressed-tensors"),
                                                     ("hf", "q8_0", "q8_0 is a GGUF block format")])
def test_int8_refusals(tiny4, tmp_path, fmt, dtype, match):
    with pytest.raises(UsageError, match=match):
        export(tiny4, tmp_path / "x", format=fmt, dtype=dtype, config=TINY4)
