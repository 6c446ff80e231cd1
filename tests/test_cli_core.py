"""The core commands through click's CliRunner: exit codes, output, --json."""

import json

import pytest
from click.testing import CliRunner

from grokweights.cli import main


@pytest.fixture
def runner():
    return CliRunner()


def test_help_lists_the_pipeline(runner):
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "inspect", "manifest", "verify", "demo"):
        assert command in result.output


def test_synth_then_verify(runner, tmp_path):
    result = runner.invoke(main, ["synth", "--preset", "tiny", "--seed", "3", "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c" / "ckpt-0" / "tensor00025_000").exists()
    result = runner.invoke(main, ["verify", str(tmp_path / "c"), "--json", "--deep"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["counts"] == {"ok": 26}


def test_verify_exit_codes_and_json(runner, tiny_checkpoint):
    victim = tiny_checkpoint / "ckpt-0" / "tensor00007_000"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\xff")
    result = runner.invoke(main, ["verify", str(tiny_checkpoint / "ckpt-0"), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert [r["path"] for r in report["results"] if r["status"] != "ok"] == ["ckpt-0/tensor00007_000"]
    text = runner.invoke(main, ["verify", str(tiny_checkpoint)])
    assert text.exit_code == 1 and "tensor00007_000" in text.output and "FAILED" in text.output


def test_verify_against_the_shipped_manifest_by_name(runner, tiny_checkpoint):
    result = runner.invoke(main, ["verify", str(tiny_checkpoint), "--manifest", "grok-1", "--fast", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["counts"]["missing"] >= 700


def test_verify_usage_errors_exit_2(runner, tiny_checkpoint, tmp_path):
    (tiny_checkpoint / "grokweights-manifest.json").unlink()
    result = runner.invoke(main, ["verify", str(tiny_checkpoint)])
    assert result.exit_code == 2
    assert "no grokweights-manifest.json" in result.output and "--manifest" in result.output
    result = runner.invoke(main, ["verify", str(tiny_checkpoint), "--manifest", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "no manifest" in result.output
    assert runner.invoke(main, ["verify", str(tiny_checkpoint), "--jobs", "0"]).exit_code == 2


def test_strict_fails_on_unverified(runner, tiny_checkpoint):
    result = runner.invoke(main, ["verify", str(tiny_checkpoint), "--fast", "--strict"])
    assert result.exit_code == 1
    assert runner.invoke(main, ["verify", str(tiny_checkpoint), "--fast"]).exit_code == 0


def test_inspect(runner, tiny_checkpoint):
    result = runner.invoke(main, ["inspect", str(tiny_checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] and len(data["files"]) == 26
    (tiny_checkpoint / "ckpt-0" / "tensor00012_000").write_bytes(b"not a pickle")
    result = runner.invoke(main, ["inspect", str(tiny_checkpoint)])
    assert result.exit_code == 1 and "tensor00012_000" in result.output


def test_manifest_create_pin_show(runner, tiny_checkpoint, tmp_path):
    out = tmp_path / "m.json"
    result = runner.invoke(main, ["manifest", "create", str(tiny_checkpoint), "-o", str(out), "--name", "mine"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["name"] == "mine" and len(data["shards"]) == 26
    for shard in data["shards"]:
        shard["sha256"] = None
    out.write_text(json.dumps(data))
    result = runner.invoke(main, ["manifest", "pin", str(tiny_checkpoint), "--manifest", str(out)])
    assert result.exit_code == 0 and "26 hash(es) added" in result.output
    result = runner.invoke(main, ["manifest", "show", "grok-1"])
    assert result.exit_code == 0 and "770" in result.output
    assert "5f96d43576e3d386c9ba65b883210a393b68210e" in result.output


def test_manifest_create_names_missing_fields(runner, tmp_path):
    from grokweights.checkpoint.config import ModelConfig
    from grokweights.checkpoint.synth import synthesize

    synthesize(tmp_path, ModelConfig(num_layers=1, emb_size=32, num_q_heads=2, num_kv_heads=1, key_size=16,
                                     num_experts=2, num_selected_experts=1, widening_factor=2, vocab_size=64))
    result = runner.invoke(main, ["manifest", "create", str(tmp_path), "-o", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    assert "key_size" in result.output and "--config" in result.output
    assert not (tmp_path / "m.json").exists()


def test_errors_are_one_line_on_stderr(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["manifest", "show", "nope"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("grokweights: error: no manifest 'nope'")


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "grokweights", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "verify" in result.stdout
