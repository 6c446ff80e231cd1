"""Meshes as users build them: ``jax.make_mesh`` (Explicit axes, current JAX's default) and Auto axes, for
``load``, ``forward`` and ``smoke``."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from grokweights.checkpoint.config import preset
from grokweights.errors import UsageError
from grokweights.model.transformer import forward
from grokweights.runtime.devices import jax_mesh
from grokweights.runtime.load import load
from grokweights.runtime.smoke import smoke
from grokweights.store import reshard

TINY = preset("tiny")
TOKENS = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
AxisType = getattr(jax.sharding, "AxisType", None)
pytestmark = pytest.mark.skipif(AxisType is None, reason="this JAX has no mesh axis types (every mesh is Auto)")


@pytest.fixture(scope="module")
def store(tiny_source, tmp_path_factory):
    dst = tmp_path_factory.mktemp("axis-types") / "store"
    reshard(tiny_source, dst, "data=2,model=4", layers="0", verify=False)
    return dst


@pytest.fixture(scope="module")
def reference(store):
    return np.asarray(forward(load(store), TOKENS, TINY, layers="0", dtype="float32"))


@pytest.mark.parametrize("kind", ["Explicit", "Auto"], ids=["explicit", "auto"])
@pytest.mark.parametrize("shape", [(2, 4), (8, 1)], ids=["2x4", "8x1"])
def test_load_and_forward_on_make_mesh(store, reference, kind, shape):
    kind = getattr(AxisType, kind)
    mesh = jax.make_mesh(shape, ("data", "model"), axis_types=(kind, kind))
    params = load(store, mesh)
    leaf = params["transformer/decoder_layer_0/moe/linear"]["w"].weight
    assert leaf.sharding.mesh.axis_types == (kind, kind)
    logits = np.asarray(forward(params, TOKENS, TINY, layers="0", dtype="float32"))
    np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-5)


def test_make_mesh_default_is_what_users_get(store, reference):
    params = load(store, jax.make_mesh((2, 4), ("data", "model")))
    np.testing.assert_allclose(np.asarray(forward(params, TOKENS, TINY, layers="0", dtype="float32")), reference,
                               rtol=1e-5, atol=1e-5)


def test_smoke_with_explicit_and_auto_axes(store):
    explicit = smoke(store, axis_types="explicit", tokens=TOKENS.tolist())
    auto = smoke(store, axis_types="auto", tokens=TOKENS.tolist())
    assert explicit.ok and auto.ok
    assert [[t.id for t in row] for row in explicit.top] == [[t.id for t in row] for row in auto.top]


def test_jax_mesh_axis_types():
    assert jax_mesh("data=2,model=4", axis_types="explicit").axis_types == (AxisType.Explicit,) * 2
    assert jax_mesh("data=2,model=4").axis_types == (AxisType.Auto,) * 2
    with pytest.raises(UsageError, match="axis types must be one of auto, explicit"):
        jax_mesh("data=2,model=4", axis_types="manual")


def test_cli_smoke_axis_types(store):
    from click.testing import CliRunner

    from grokweights.cli import main

    result = CliRunner().invoke(main, ["smoke", str(store), "--axis-types", "explicit", "--tokens", "5,6,7"])
    assert result.exit_code == 0, result.output
    assert "smoke: ok" in result.output
