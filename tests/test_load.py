"""The loading API: any mesh from a store or an official ckpt-0, lazy handles, dequantised loads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import layout
from grokweights.checkpoint.shards import dequantize, read_shard
from grokweights.errors import MeshError, StoreError, UsageError
from grokweights.model.params import QuantizedWeight
from grokweights.runtime.load import LoadStats, Store, load, open
from grokweights.store.reshard import reshard

TINY = preset("tiny")


@pytest.fixture(scope="module")
def ckpt(tiny_source):
    """The shared tiny checkpoint (seed 0, manifest beside it); read only."""
    return tiny_source


@pytest.fixture(scope="module")
def store(ckpt, tmp_path_factory):
    dst = tmp_path_factory.mktemp("store") / "st"
    reshard(ckpt, dst, "data=1,model=8")
    return dst


def _check(params, root, *, dtype=None, layers=None):
    specs = [s for s in layout(TINY) if layers is None or s.layer is None or s.layer in layers]
    assert sum(len(v) for v in params.values()) == len(specs)
    for spec in specs:
        src, leaf = read_shard(root / "ckpt-0" / spec.file), params[spec.path][spec.name]
        if spec.kind == "array":
            assert isinstance(leaf, jax.Array) and np.array_equal(np.asarray(leaf), src), spec.key
        elif dtype is not None:
            assert leaf.dtype == dtype
            assert np.array_equal(np.asarray(leaf), dequantize(src.weight, src.scales, dtype=dtype)), spec.key
        else:
            assert isinstance(leaf, QuantizedWeight) and leaf.weight.dtype == jnp.int8
            assert np.array_equal(np.asarray(leaf.weight), src.weight), spec.key
            assert np.array_equal(np.asarray(leaf.dequantize()), dequantize(src.weight, src.scales)), spec.key


def test_load_store_on_its_own_mesh_reads_each_byte_once(store, ckpt):
    stats = LoadStats()
    params = load(store, stats=stats)
    _check(params, ckpt)
    leaf = params["language_model/in_out_embed"]["embeddings"]
    assert isinstance(leaf.sharding, jax.sharding.NamedSharding)
    assert leaf.sharding.mesh.shape == {"data": 1, "model": 8}
    # one process addresses all 8 devices: every region once, replicated arrays once
    assert stats.bytes_read == open(store).plan.total_bytes and stats.source == "store"


@pytest.mark.parametrize("mesh,rules", [("data=8,model=1", None), ("data=2,model=4", None),
                                        ("expert=4,model=2", "expert")])
def test_store_served_on_another_mesh_and_rules(store, ckpt, mesh, rules):
    params = load(store, mesh, rules=rules)
    _check(params, ckpt)
    w = params["transformer/decoder_layer_1/moe/linear_1"]["w"]
    assert w.weight.sharding.spec == jax.sharding.PartitionSpec(*(
        ("expert", "model", None) if rules == "expert" else (None, "model", "data")))


def test_load_official_checkpoint_directly(ckpt):
    devices = np.array(jax.devices()[:4]).reshape(2, 2)
    stats = LoadStats()
    params = load(ckpt / "ckpt-0", jax.sharding.Mesh(devices, ("data", "model")), stats=stats)
    _check(params, ckpt)
    assert stats.source == "ckpt-0"
    assert len(params["transformer/decoder_layer_0/moe/linear_1"]["w"].weight.sharding.device_set) == 4


def test_dequantised_load_and_layer_subset(store, ckpt):
    _check(load(store, dtype=jnp.bfloat16, layers=[1]), ckpt, dtype=jnp.bfloat16, layers=[1])
    _check(load(ckpt, "data=2,model=4", dtype="float32", layers="0"), ckpt, dtype=jnp.float32, layers=[0])


def test_mesh_and_layer_errors(store):
    with pytest.raises(MeshError, match="needs 16 devices but 8 are available"):
        load(store, "data=2,model=8")
    with pytest.raises(MeshError, match="axis 'expert', which the mesh data=1,model=8 lacks"):
        load(store, "data=1,model=8", rules="expert")
    six = jax.sharding.Mesh(np.array(jax.devices()[:6]).reshape(3, 2), ("data", "model"))
    with pytest.raises(MeshError, match="dimension 1 of size 64 cannot be split 6 ways"):
        load(store, six)
    with pytest.raises(UsageError, match="layer 5 does not exist"):
        load(store, layers=[1, 5])


def test_open_gives_lazy_handles(store, ckpt):
    handle = open(store)
    assert isinstance(handle, Store) and "data=1,model=8" in repr(handle)
    key = "transformer/decoder_layer_0/moe/linear/w/weight"
    assert key in handle.keys() and handle[key].shape == (8, 64, 344)
    src = read_shard(ckpt / "ckpt-0" / "tensor00002_000")
    assert np.array_equal(handle.read(key, (slice(2, 3),)), src.weight[2:3])
    assert all(handle.sha256(k) == handle.index["sha256"][k] for k in handle.keys())
    with pytest.raises(StoreError, match="no array"):
        handle.read("nope")


def test_layer_missing_from_a_partial_store(ckpt, tmp_path):
    reshard(ckpt, tmp_path / "part", "data=2,model=4", layers="1")
    with pytest.raises(StoreError, match=r"layers \[0\] are not in the store \(it holds layers \[1\]\)"):
        load(tmp_path / "part", layers=[0])
    params = load(tmp_path / "part")
    assert not any("decoder_layer_0" in k for k in params)
    with pytest.raises(StoreError, match="not a grokweights store"):
        load(tmp_path / "nothing-here")


@pytest.mark.parametrize("source", ["store", "ckpt"])
def test_staging_buffers_are_reused_and_loads_stay_exact(store, ckpt, monkeypatch, source):
    """Staging buffers (the accelerator path, forced here on CPU devices, which then get copies): each leaf's
    buffers go back to the pool once it is on its devices and serve later leaves of the same size."""
    import sys

    load_module = sys.modules[load.__module__]

    monkeypatch.setenv("GROKWEIGHTS_LOAD_STAGING", "pool")
    monkeypatch.setattr(load_module, "_WINDOW_BYTES", 64 << 10)  # the tiny model fits the real window whole
    stats = LoadStats()
    root = store if source == "store" else ckpt / "ckpt-0"
    params = load(root, "data=1,model=8", stats=stats)
    _check(params, ckpt)
    assert stats.staging_reused > 0 and stats.staging_allocated < stats.regions
    # and again with a dequantised load (the staging buffers feed dequantisation)
    _check(load(root, "data=1,model=8", dtype=jnp.float32), ckpt, dtype=jnp.float32)


def test_load_takes_an_opened_store_and_a_mesh_spec_with_devices(store, ckpt):
    from grokweights.sharding.mesh import as_mesh_spec

    opened = open(store)
    kind = "explicit" if hasattr(jax.sharding, "AxisType") else "auto"  # the JAX floor has no axis types
    params = load(opened, as_mesh_spec("data=2,model=2"), devices=jax.devices()[:4], axis_types=kind)
    _check(params, ckpt)
    leaf = params["language_model/in_out_embed"]["embeddings"]
    assert leaf.sharding.mesh.shape == {"data": 2, "model": 2} and len(leaf.sharding.mesh.devices.flat) == 4
