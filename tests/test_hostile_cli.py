"""Hostile command-line input: sizes without bounds, regexes that backtrack, outputs that would overwrite.

Each case runs the CLI in a subprocess under a memory limit and a timeout and must fail cleanly: exit code 1
or 2, one error line naming the option or file and the fix, no traceback, nothing written outside the
destination.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import parse_layers
from grokweights.errors import ConfigError, MeshError, UsageError
from grokweights.sharding.mesh import MeshSpec, Rule
from tests.hostile import assert_clean_failure, assert_tree_unchanged, run_cli, tree_state


def _config_file(tmp_path, **fields):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**preset("tiny").to_dict(), **fields}))
    return path


# ----------------------------------------------------------------------------- sizes from input


def test_parse_layers_checks_before_building():
    with pytest.raises(UsageError, match="does not exist"):
        parse_layers("0-99999999999", num_layers=64)
    with pytest.raises(UsageError, match="does not exist"):
        parse_layers("0-99999999999")  # no model given: still bounded
    assert parse_layers("0-2,5", num_layers=8) == (0, 1, 2, 5)


@pytest.mark.parametrize("args, names", [
    (["plan", "--mesh", "data=1,model=8", "--layers", "0-99999999999"], "--layers"),
    (["plan", "--mesh", "data=1,model=8", "--devices", "99999999999"], "--devices"),
    (["plan", "--mesh", "data=1,model=8,unused=100000000000000000000"], "unused"),
    (["plan", "--mesh", "data=1,model=8", "--preset", "tiny", "--layers", "0-99999999999"], "--layers"),
], ids=["layers", "devices", "mesh-axis", "layers-tiny"])
def test_plan_sizes(args, names):
    assert_clean_failure(run_cli(args, timeout=30), names=names)


def test_mesh_and_config_bounds():
    with pytest.raises(MeshError, match="at most"):
        MeshSpec.parse("data=1,model=8,unused=100000000000000000000")
    with pytest.raises(MeshError, match="devices"):
        MeshSpec.parse("a=1024,b=1024,c=2")
    with pytest.raises(ConfigError, match="num_layers"):
        preset("tiny").with_layers(1).__class__(**{**preset("tiny").to_dict(), "num_layers": 100_000_000})


@pytest.mark.parametrize("command", ["inspect", "plan", "reshard"])
def test_config_with_absurd_num_layers(tmp_path, tiny_checkpoint, command):
    config = _config_file(tmp_path, num_layers=100_000_000)
    args = {"inspect": ["inspect", tiny_checkpoint, "--config", config],
            "plan": ["plan", "--mesh", "data=1,model=8", "--config", config],
            "reshard": ["reshard", tiny_checkpoint, tmp_path / "store", "--mesh", "data=1,model=1", "--config",
                        config]}[command]
    result = run_cli(args, timeout=60, memory=None if command == "reshard" else 2 << 30)
    assert_clean_failure(result, names=[str(config), "num_layers"])
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("pattern", ["(a+)+$", "(x|x)" * 24 + "y", ".*.*.*.*.*z", "(?=t)transformer/.*",
                                     "a" * 300])
def test_rules_that_could_backtrack(tmp_path, pattern):
    with pytest.raises(MeshError):
        Rule(pattern, (None,))
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"name": "evil", "rules": [{"pattern": pattern, "spec": []}]}))
    result = run_cli(["plan", "--mesh", "data=1,model=8", "--rules", rules], timeout=30)
    assert_clean_failure(result, names=[str(rules), "rule pattern"], fix="simplify")


# ------------------------------------------------------------------------- one line, not a traceback


def test_non_numeric_free_space_override(tmp_path):
    result = run_cli(["synth", "--out", tmp_path / "out"], env={"GROKWEIGHTS_FREE_SPACE_BYTES": "lots"}, timeout=30)
    assert_clean_failure(result, names="GROKWEIGHTS_FREE_SPACE_BYTES", fix="unset it")
    assert not (tmp_path / "out" / "ckpt-0").exists() or not any((tmp_path / "out" / "ckpt-0").iterdir())


def test_synth_on_a_full_disk_writes_nothing(tmp_path):
    result = run_cli(["synth", "--out", tmp_path / "out"], env={"GROKWEIGHTS_FREE_SPACE_BYTES": "1000"}, timeout=30)
    assert_clean_failure(result, names="free space", fix="--out")
    assert not list((tmp_path / "out").rglob("tensor*"))


@pytest.mark.parametrize("args, names", [
    (["--batch", "100000000"], "--batch"),
    (["--host-devices", "100000"], "--host-devices"),
    (["--tokens", ",".join(["1"] * 2000), "--batch", "1000"], "--batch"),
    (["--save-expect", "no/such/folder/fp.json"], "--save-expect"),
], ids=["batch", "host-devices", "tokens", "save-expect"])
def test_smoke_refuses_before_running(tiny_checkpoint, tmp_path, args, names):
    before = tree_state(tiny_checkpoint)
    result = run_cli(["smoke", tiny_checkpoint, *args], cwd=tmp_path, timeout=60, memory=None)
    assert_clean_failure(result, names=names, codes=(2,))
    assert_tree_unchanged(tiny_checkpoint, before)
    assert not list(tmp_path.rglob("fp.json"))


# ------------------------------------------------------------------------------- nothing overwritten


def test_synth_refuses_an_existing_checkpoint(tiny_checkpoint):
    before = tree_state(tiny_checkpoint)
    result = run_cli(["synth", "--preset", "tiny", "--layers", "1", "--seed", "5", "--out", tiny_checkpoint],
                     timeout=60)
    assert_clean_failure(result, names=str(tiny_checkpoint / "ckpt-0"), fix="--force")
    assert_tree_unchanged(tiny_checkpoint, before)


def test_synth_force_replaces_the_whole_checkpoint(tiny_checkpoint):
    result = run_cli(["synth", "--preset", "tiny", "--layers", "1", "--seed", "5", "--out", tiny_checkpoint,
                      "--force", "-q"], timeout=60)
    assert result.returncode == 0, result
    assert len(list((tiny_checkpoint / "ckpt-0").glob("tensor*"))) == 14  # 2 + 12 x 1 layer, none left over
    assert run_cli(["verify", tiny_checkpoint], timeout=60).returncode == 0


@pytest.mark.parametrize("force", [False, True])
def test_manifest_create_never_writes_onto_a_shard(tiny_checkpoint, force):
    shard = tiny_checkpoint / "ckpt-0" / "tensor00000_000"
    before = tree_state(tiny_checkpoint)
    result = run_cli(["manifest", "create", tiny_checkpoint, "-o", shard, *(["--force"] if force else [])],
                     timeout=60)
    assert_clean_failure(result, names=str(shard), fix="-o")
    assert_tree_unchanged(tiny_checkpoint, before)


def test_manifest_create_refuses_an_existing_output(tiny_checkpoint, tmp_path):
    out = tmp_path / "m.json"
    out.write_text("mine")
    result = run_cli(["manifest", "create", tiny_checkpoint, "-o", out], timeout=60)
    assert_clean_failure(result, names=str(out), fix="--force")
    assert out.read_text() == "mine"
    assert run_cli(["manifest", "create", tiny_checkpoint, "-o", out, "--force", "-q"], timeout=60).returncode == 0
    assert json.loads(out.read_text())["schema"] == "grokweights.manifest"


# ---------------------------------------------------------------------------------------- start-up


@pytest.mark.parametrize("args", [["--help"], ["inspect", "{ckpt}"], ["verify", "{ckpt}", "-q"],
                                  ["verify", "{ckpt}", "--deep", "-q"]], ids=["help", "inspect", "verify", "deep"])
def test_start_up_does_not_import_ml_dtypes(tiny_checkpoint, args):
    """Parsing headers (bfloat16 scales included) and sizing the layout use dtype names: no ml_dtypes (0.5 s)."""
    argv = [a.format(ckpt=tiny_checkpoint) for a in args]
    code = ("import sys\nfrom grokweights.cli import main\nsys.argv = ['grokweights', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "heavy = sorted(m for m in ('ml_dtypes', 'jax', 'tensorstore', 'libtorrent') if m in sys.modules)\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stderr, result.stderr[-2000:]
