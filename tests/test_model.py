"""The forward pass against an independent numpy implementation, on one device and on several meshes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import psutil
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from grokweights.checkpoint.config import ModelConfig, preset
from grokweights.checkpoint.layout import layout
from grokweights.checkpoint.shards import dequantize as np_dequantize
from grokweights.errors import LayoutMismatchError, UsageError
from grokweights.model.moe import moe, tile_rows
from grokweights.model.params import QuantizedWeight
from grokweights.model.transformer import abstract_params, forward, forward_shape, prepare_forward

# ----------------------------------------------------------------------------- parameters


def random_params(config: ModelConfig, seed: int = 0) -> dict:
    """numpy parameters of a plausible scale: int8 weights over the whole range, positive bf16 scales."""
    rng = np.random.default_rng(seed)
    params: dict = {}
    for spec in layout(config):
        if spec.kind == "quantized":
            weight = rng.integers(-128, 128, spec.shape, dtype=np.int16).astype(np.int8)
            base = 1.0 / (74.0 * math.sqrt(spec.shape[-2]))
            scales = (base * rng.lognormal(0.0, 0.25, spec.scales_shape)).astype(ml_dtypes.bfloat16)
            value = QuantizedWeight(weight, scales)
        elif spec.name == "scale":
            value = (1.0 + 0.1 * rng.standard_normal(spec.shape)).astype(np.float32)
        elif spec.name == "embeddings":
            value = (rng.standard_normal(spec.shape) / math.sqrt(spec.shape[1])).astype(np.float32)
        else:  # router: logits that differ between tokens, so many experts win
            value = (2.0 / math.sqrt(spec.shape[0]) * rng.standard_normal(spec.shape)).astype(np.float32)
        params.setdefault(spec.path, {})[spec.name] = value
    return params


def _fit(entries: tuple, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """A partition spec for ``shape``: keep mesh axes that exist and divide the dimension."""
    out = []
    for dim, entry in zip(shape, tuple(entries) + (None,) * (len(shape) - len(entries)), strict=False):
        names = tuple(n for n in ((entry,) if isinstance(entry, str) else entry or ()) if n in mesh.shape)
        size = math.prod(mesh.shape[n] for n in names)
        out.append(names if names and dim % size == 0 else None)
    return PartitionSpec(*out)


def release_rules(spec):
    return spec.partition_spec


def expert_rules(spec):
    """Experts split over an ``expert`` axis, everything else on ``model`` where possible."""
    if spec.path.endswith(("moe/linear", "moe/linear_v", "moe/linear_1")):
        return ("expert", None, "model")
    return ("model",) if spec.name != "embeddings" else (None, "model")


def place(params: dict, config: ModelConfig, mesh: Mesh, rules=release_rules) -> dict:
    placed: dict = {}
    for spec in layout(config):
        value = params[spec.path][spec.name]
        entries = rules(spec)

        def put(a, entries=entries):
            return jax.device_put(a, NamedSharding(mesh, _fit(entries, a.shape, mesh)))

        placed.setdefault(spec.path, {})[spec.name] = (
            QuantizedWeight(put(value.weight), put(value.scales)) if isinstance(value, QuantizedWeight)
            else put(value))
    return placed


def make_mesh(axes: dict[str, int]) -> Mesh:
    devices = np.array(jax.devices()[: math.prod(axes.values())]).reshape(tuple(axes.values()))
    return Mesh(devices, tuple(axes))


# ----------------------------------------------------------------------------- numpy reference


def _np_norm(x, scale):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-5) * scale


def _np_weight(w):
    return np_dequantize(w.weight, w.scales).astype(np.float64) if isinstance(w, QuantizedWeight) else w


def _np_rope(x):
    """x [T, N, d]: dimension j pairs with j + d/2, angle = position / 10000^(2j/d)."""
    t, _, d = x.shape
    out = np.empty_like(x)
    for pos in range(t):
        for j in range(d // 2):
            angle = pos / 10000.0 ** (2 * j / d)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[pos, :, j], x[pos, :, j + d // 2]
            out[pos, :, j] = a * c - b * s
            out[pos, :, j + d // 2] = b * c + a * s
    return out


def _np_attention(x, tokens, p, config):
    t = x.shape[0]
    h_q, h_kv, d = config.num_q_heads, config.num_kv_heads, config.key_size
    q = _np_rope((x @ _np_weight(p["query"])).reshape(t, h_q, d))
    k = _np_rope((x @ _np_weight(p["key"])).reshape(t, h_kv, d))
    v = (x @ _np_weight(p["value"])).reshape(t, h_kv, d)
    out = np.zeros((t, h_q, d))
    for head in range(h_q):
        kv = head // (h_q // h_kv)
        scores = q[:, head] @ k[:, kv].T * config.attn_output_multiplier
        scores = 30.0 * np.tanh(scores / 30.0)
        for i in range(t):
            for j in range(t):
                if j > i or tokens[j] == 0:
                    scores[i, j] = -1e30
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        out[:, head] = (scores / scores.sum(axis=1, keepdims=True)) @ v[:, kv]
    return out.reshape(t, h_q * d) @ _np_weight(p["linear"])


def _np_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _np_moe(x, p, config, used):
    logits = x @ p["router"].astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    out = np.zeros_like(x)
    for e in range(config.num_experts):
        w_in, w_v, w_out = (_np_weight(p[n])[e] for n in ("linear", "linear_v", "linear_1"))
        for n in range(x.shape[0]):
            chosen = np.argsort(-probs[n], kind="stable")[: config.num_selected_experts]
            ranked = np.sort(probs[n])[::-1]
            assert ranked[config.num_selected_experts - 1] - ranked[config.num_selected_experts] > 1e-6
            if e in chosen:
                used.add(e)
                out[n] += probs[n, e] * ((_np_gelu(x[n] @ w_in) * (x[n] @ w_v)) @ w_out)
    return out


def reference(params, tokens, config, layers=None):
    """Straightforward float64 Grok-1 forward, one sequence at a time."""
    layers = range(config.num_layers) if layers is None else layers
    emb = params["language_model/in_out_embed"]["embeddings"].astype(np.float64)
    used: set[int] = set()
    logits = []
    for row in np.asarray(tokens):
        h = emb[row] * config.embedding_multiplier_scale
        for i in layers:
            pre = f"transformer/decoder_layer_{i}"
            norm = [params[f"{pre}/rms_norm{s}"]["scale"] for s in ("", "_1", "_2", "_3")]
            attn = {n: params[f"{pre}/multi_head_attention/{n}"]["w"] for n in ("query", "key", "value", "linear")}
            experts = {n: params[f"{pre}/moe/{n}"]["w"] for n in ("linear", "linear_v", "linear_1")}
            experts["router"] = params[f"{pre}/router"]["w"]
            h = h + _np_norm(_np_attention(_np_norm(h, norm[0]), row, attn, config), norm[1])
            h = h + _np_norm(_np_moe(_np_norm(h, norm[2]), experts, config, used), norm[3])
        h = _np_norm(h, params["language_model/rms_norm"]["scale"])
        logits.append(h @ emb.T * config.output_multiplier_scale)
    return np.stack(logits), used


# ----------------------------------------------------------------------------- fixtures

TINY = preset("tiny")
TOKENS = np.array([[5, 17, 300, 42, 9, 511, 77, 128],
                   [0, 0, 3, 250, 250, 1, 64, 400]], dtype=np.int32)  # row 2 is left-padded


@pytest.fixture(scope="module")
def params():
    return random_params(TINY, seed=1)


@pytest.fixture(scope="module")
def single(params):
    """The float32 forward on one device, and the reference."""
    on_one = jax.tree_util.tree_map(lambda a: jax.device_put(a, jax.devices()[0]), params)
    return on_one, np.asarray(forward(on_one, TOKENS, TINY, dtype=jnp.float32))


# ----------------------------------------------------------------------------- tests


def test_float32_matches_numpy_reference(params, single):
    _, logits = single
    expected, used = reference(params, TOKENS, TINY)
    assert logits.shape == (2, 8, TINY.vocab_size) and logits.dtype == np.float32
    assert len(used) >= 6, f"routing too degenerate to test the MoE: experts {sorted(used)}"
    assert np.abs(expected).max() > 0.5
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


def test_layer_subset_matches_reference(params, single):
    on_one, full = single
    logits = np.asarray(forward(on_one, TOKENS[:1], TINY, layers=[1], dtype=jnp.float32))
    expected, _ = reference(params, TOKENS[:1], TINY, layers=[1])
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    assert np.abs(logits - full[:1]).max() > 1e-2  # skipping layer 0 changes the result


def test_only_requested_layers_needed(params):
    partial_params = {k: v for k, v in params.items() if "decoder_layer_0" not in k}
    logits = forward(partial_params, TOKENS[:1, :4], TINY, layers="1")
    assert logits.shape == (1, 4, TINY.vocab_size)
    with pytest.raises(LayoutMismatchError, match="decoder_layer_0/moe/linear/w: missing"):
        forward(partial_params, TOKENS[:1, :4], TINY)


MESHES = {
    "data2-model4": ({"data": 2, "model": 4}, release_rules),  # upstream needs model == 8
    "model8": ({"model": 8}, release_rules),
    "data8": ({"data": 8}, release_rules),
    "expert4-model2": ({"expert": 4, "model": 2}, expert_rules),  # experts split across devices
}


@pytest.mark.parametrize("name", list(MESHES))
def test_sharded_equals_single_device(params, single, name):
    axes, rules = MESHES[name]
    placed = place(params, TINY, make_mesh(axes), rules)
    logits = forward(placed, TOKENS, TINY, dtype=jnp.float32)
    assert len(logits.sharding.device_set) == math.prod(axes.values())
    np.testing.assert_allclose(np.asarray(logits), single[1], rtol=0, atol=2e-5)


def test_batch_rows_are_independent(single):
    on_one, _ = single
    batch = np.concatenate([TOKENS, TOKENS[:1, ::-1]])  # batch of 3, not a multiple of any mesh axis
    logits = np.asarray(forward(on_one, batch, TINY, dtype=jnp.float32))
    for b in range(3):
        alone = np.asarray(forward(on_one, batch[b:b + 1], TINY, dtype=jnp.float32))
        np.testing.assert_allclose(logits[b:b + 1], alone, rtol=0, atol=2e-5)


def test_bfloat16_close_to_float32_and_deterministic(single):
    on_one, logits32 = single
    program = prepare_forward(on_one, TOKENS, TINY)
    first, second = np.asarray(program()), np.asarray(program())
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - logits32).max() < 0.1 * np.abs(logits32).max()


def test_other_expert_counts_and_scale_blocks():
    config = ModelConfig(num_layers=1, emb_size=32, num_q_heads=2, num_kv_heads=1, key_size=16, num_experts=3,
                         num_selected_experts=1, widening_factor=2, vocab_size=64, embedding_multiplier_scale=4.0,
                         output_multiplier_scale=0.5, attn_output_multiplier=0.3, scale_blocks=4)
    params = random_params(config, seed=3)
    tokens = np.array([[1, 2, 3, 4, 5, 6]], dtype=np.int32)
    expected, used = reference(params, tokens, config)
    assert len(used) >= 2
    np.testing.assert_allclose(np.asarray(forward(params, tokens, config, dtype=jnp.float32)), expected,
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("n,experts,k", [(1, 8, 2), (7, 5, 3), (40, 8, 2), (300, 4, 1)])
def test_grouped_experts_equal_dense_routing(n, experts, k):
    rng = np.random.default_rng(n)
    d, f = 8, 16
    p = {"router": jnp.asarray(rng.standard_normal((d, experts)), jnp.float32),
         "linear": jnp.asarray(rng.standard_normal((experts, d, f)) / 3, jnp.float32),
         "linear_v": jnp.asarray(rng.standard_normal((experts, d, f)) / 3, jnp.float32),
         "linear_1": jnp.asarray(rng.standard_normal((experts, f, d)) / 4, jnp.float32)}
    config = ModelConfig(num_layers=1, emb_size=d, num_q_heads=1, num_kv_heads=1, key_size=2,
                         num_experts=experts, num_selected_experts=k, widening_factor=3, vocab_size=8)
    x = rng.standard_normal((1, n, d)).astype(np.float32)
    out = np.asarray(jax.jit(lambda x: moe(x, p, config, jnp.float32, jax.lax.Precision.HIGHEST))(x))
    expected = _np_moe(x[0].astype(np.float64), {key: np.asarray(v, np.float64) for key, v in p.items()},
                       config, set())
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-4)
    assert 1 <= tile_rows(n * k, experts) <= max(1, n * k // experts)


def test_bad_inputs_are_named(params):
    with pytest.raises(UsageError, match="0..511"):
        forward(params, [[1, 512]], TINY)
    with pytest.raises(UsageError, match=r"\[batch, length\]"):
        forward(params, [1, 2, 3], TINY)
    with pytest.raises(UsageError, match="layer"):
        forward(params, [[1, 2]], TINY, layers=[2])
    with pytest.raises(UsageError, match="dtype"):
        forward(params, [[1, 2]], TINY, dtype=jnp.int8)
    broken = dict(params)
    query = params["transformer/decoder_layer_1/multi_head_attention/query"]["w"]
    broken["transformer/decoder_layer_1/multi_head_attention/query"] = {"w": query.weight[:, :32]}
    with pytest.raises(LayoutMismatchError, match=r"decoder_layer_1/multi_head_attention/query/w: shape"):
        forward(broken, [[1, 2]], TINY)


def test_grok1_shapes_without_allocating():
    grok = preset("grok-1")
    before = psutil.Process().memory_info().rss
    shape = forward_shape(grok, 2, 16)
    assert (shape.shape, shape.dtype) == ((2, 16, 131072), jnp.float32)
    shape = forward_shape(grok, 3, 5, layers="0,63", dtype=jnp.float32)
    assert shape.shape == (3, 5, 131072)
    assert psutil.Process().memory_info().rss - before < 512 * 2**20  # the weights would be 296 GiB
    tree = abstract_params(grok)
    total = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree))
    assert total > 300e9


def test_float_weights_stand_in_for_int8(params, single):
    """A store resharded with dequantised weights gives the same logits as the int8 one."""
    plain = jax.tree_util.tree_map(
        lambda leaf: np_dequantize(leaf.weight, leaf.scales) if isinstance(leaf, QuantizedWeight) else leaf,
        params, is_leaf=lambda leaf: isinstance(leaf, QuantizedWeight))
    logits = np.asarray(forward(plain, TOKENS, TINY, dtype=jnp.float32))
    np.testing.assert_allclose(logits, single[1], rtol=0, atol=2e-5)
