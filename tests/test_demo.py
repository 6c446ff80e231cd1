"""`grokweights demo`: the whole pipeline on the embedded tiny model, as `make demo` runs it."""

import importlib.util
import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path):
    env_work = tmp_path / "work"
    result = subprocess.run([sys.executable, "-m", "grokweights", "demo", "--json", "--workdir", str(env_work)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = {s["name"]: s for s in json.loads(result.stdout)["stages"]}
    assert list(stages) == ["synth", "manifest create", "verify", "verify a corrupted copy",
                            "seed + fetch by magnet", "fetch + reshard in one pass", "reshard", "load", "smoke",
                            "export gguf"]
    assert "tensor00005_000" in stages["verify a corrupted copy"]["result"]
    assert "on 8 devices" in stages["load"]["result"]
    assert "checks passed" in stages["smoke"]["result"]
    assert "from streamed-store/ -> tiny.gguf" in stages["export gguf"]["result"]  # the store fetch --reshard left
    if importlib.util.find_spec("llama_cpp") is not None:  # run in a child process by the demo
        assert "llama.cpp and grokweights.forward agree" in stages["export gguf"]["result"]
    assert all(s["bytes"] > 0 for s in stages.values())
    assert (env_work / "store" / "grokweights.json").exists()


def test_a_work_folder_is_new_empty_or_a_previous_demos(tmp_path):
    from grokweights.demo import DEMO_MARKER, DEMO_PARTS, prepare_workdir
    from grokweights.errors import UsageError

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("mine")
    with pytest.raises(UsageError, match="not a demo's work folder"):
        prepare_workdir(theirs)
    assert sorted(p.name for p in theirs.iterdir()) == ["thesis.tex"]  # nothing written, nothing removed

    work = tmp_path / "work"
    prepare_workdir(work)  # new: made and marked
    assert (work / DEMO_MARKER).is_file()
    for name in DEMO_PARTS:  # a previous run's parts
        (work / name / "sub").mkdir(parents=True)
        (work / name / "sub" / "f").write_text("old")
    (work / "notes.txt").write_text("kept")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data").write_text("never followed")
    (work / "store").rename(work / "old-store")
    (work / "store").symlink_to(outside)  # a link where a part was: removed, not followed
    prepare_workdir(work)
    assert sorted(p.name for p in work.iterdir()) == sorted([DEMO_MARKER, "notes.txt", "old-store"])
    assert (outside / "data").read_text() == "never followed"
