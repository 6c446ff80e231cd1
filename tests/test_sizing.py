"""The machine planner: bytes per device, fit, the mesh to use instead, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import layout
from grokweights.cli import main
from grokweights.errors import MeshError, UsageError
from grokweights.sharding.sizing import USABLE_FRACTION, GiB, MachinePlan, plan_memory

GROK = preset("grok-1")
TINY = preset("tiny")


def test_shared_tensors_only_literal():
    # embeddings (512, 64) float32 split 8 ways on the width; the final norm (64,) float32 replicated
    p = plan_memory(TINY, "data=2,model=4", layers=[])
    assert p.weight_bytes == 512 * 64 * 4 // 8 + 64 * 4
    assert p.layers == () and p.devices == 8 and p.fits is None and p.max_layers is None


def test_grok1_on_eight_devices_splits_the_weights():
    p = plan_memory(GROK, "data=1,model=8", device_memory=80 * GiB)
    total = sum(spec.nbytes for spec in layout(GROK))
    assert total / 8 < p.weight_bytes < total / 8 * 1.01  # only norms and scales blocks are replicated
    assert p.fits is True and p.problems == () and p.max_layers == 64
    assert 0 < p.activation_bytes < 2 * GiB
    assert {o.mesh for o in p.options} == {"data=1,model=8", "data=2,model=4", "data=4,model=2", "data=8,model=1"}


def test_too_small_mesh_names_a_mesh_that_fits():
    p = plan_memory(GROK, "data=1,model=4", devices=8, device_memory=48 * GiB)
    assert p.fits is False
    assert any("needs 4 devices" in problem for problem in p.problems)
    assert any("GiB per device needed" in problem for problem in p.problems)
    assert p.total_bytes > USABLE_FRACTION * 48 * GiB
    assert p.suggestion is not None and p.suggestion.startswith("data=") and "model=" in p.suggestion
    chosen = next(o for o in p.options if o.mesh == p.suggestion)
    assert chosen.fits and chosen.total_bytes <= USABLE_FRACTION * 48 * GiB


def test_max_layers_is_the_largest_that_fits():
    memory = 16 * GiB
    p = plan_memory(GROK, "model=8", device_memory=memory)
    assert 1 <= p.max_layers < 64
    assert plan_memory(GROK, "model=8", layers=range(p.max_layers), device_memory=memory).fits
    assert not plan_memory(GROK, "model=8", layers=range(p.max_layers + 1), device_memory=memory).fits


def test_activations_grow_with_batch_and_length():
    small = plan_memory(GROK, "model=8", batch=1, length=16)
    big = plan_memory(GROK, "model=8", batch=4, length=512)
    assert big.activations["attention"] > 100 * small.activations["attention"]
    assert big.activations["logits"] == 4 * 32 * small.activations["logits"]
    f32 = plan_memory(GROK, "model=8", dtype="float32")
    assert f32.activations["residual"] > small.activations["residual"]
    assert f32.activations["logits"] > small.activations["logits"]


def test_host_memory_on_cpu_devices():
    p = plan_memory(TINY, "data=2,model=4", shared_host=True, host_memory=GiB)
    assert p.host_bytes > 8 * p.weight_bytes and p.fits is None
    p = plan_memory(GROK, "model=8", shared_host=True, host_memory=64 * GiB)
    assert any("host memory" in problem for problem in p.problems)


def test_round_trip_and_errors():
    p = plan_memory(TINY, "expert=4,model=2", rules="expert", batch=3, device_memory=GiB)
    assert MachinePlan.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(MeshError, match="cannot be split 5 ways"):
        plan_memory(TINY, "data=1,model=5")
    with pytest.raises(UsageError, match="dtype"):
        plan_memory(TINY, "model=2", dtype="int8")


def test_planner_does_not_import_jax():
    code = ("import sys; from grokweights.sharding.sizing import plan_memory; "
            "from grokweights.checkpoint.config import preset; plan_memory(preset('grok-1'), 'model=8'); "
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_plan_cli():
    runner = CliRunner()
    result = runner.invoke(main, ["plan", "--mesh", "data=1,model=8", "--device-memory", "80", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["fits"] is True and data["mesh"] == "data=1,model=8"
    result = runner.invoke(main, ["plan", "--mesh", "model=4", "--devices", "8", "--device-memory", "48"])
    assert result.exit_code == 1
    assert "does not fit" in result.output and "data=" in result.output
    result = runner.invoke(main, ["plan", "--preset", "tiny", "--mesh", "model=3"])
    assert result.exit_code == 2 and "cannot be split 3 ways" in result.output
