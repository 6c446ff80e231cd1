"""sha256 from the model hub's LFS metadata, through huggingface_hub pointed at a local endpoint."""

from __future__ import annotations

import hashlib
import random

import pytest

from grokweights.errors import GrokWeightsError, UsageError

from .fakehub import COMMIT, FakeHub, lfs_entry, repo_from_folder

pytest.importorskip("huggingface_hub")

from grokweights.checkpoint.hub import hub_files, hub_pins  # noqa: E402


@pytest.fixture
def repo(tmp_path):
    rng = random.Random(3)
    root = tmp_path / "repo"
    (root / "ckpt-0").mkdir(parents=True)
    for i, size in enumerate((5000, 7001, 3)):
        (root / "ckpt-0" / f"tensor{i:05d}_000").write_bytes(rng.randbytes(size))
    return root


def shards_of(root):
    return [(p.relative_to(root).as_posix(), p.stat().st_size) for p in sorted((root / "ckpt-0").iterdir())]


def test_hub_files_follow_pages_and_resolve_the_commit(repo):
    with FakeHub({"xai-org/grok-1": repo_from_folder(repo)}) as hub:
        commit, files = hub_files("xai-org/grok-1", endpoint=hub.url, token=False)
    assert commit == COMMIT
    assert files["README.md"].sha256 is None
    for path, size in shards_of(repo):
        assert files[path].size == size
        assert files[path].sha256 == hashlib.sha256((repo / path).read_bytes()).hexdigest()
    assert sum("cursor=" in r for r in hub.requests) >= 2  # several pages were followed
    assert any(f"/tree/{COMMIT}" in r for r in hub.requests)  # listed at the resolved commit


def test_hub_pins_from_env_endpoint(repo, monkeypatch):
    with FakeHub({"xai-org/grok-1": repo_from_folder(repo)}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        pins = hub_pins([*shards_of(repo), ("ckpt-0/tensor00009_000", 1)], "xai-org/grok-1", endpoint=hub.url,
                        revision="main", token=False)
    assert pins.source == f"hub:xai-org/grok-1@{COMMIT}"
    assert pins.missing == ["ckpt-0/tensor00009_000"]
    assert pins.sha256 == {p: hashlib.sha256((repo / p).read_bytes()).hexdigest() for p, _ in shards_of(repo)}


def test_hub_size_mismatch_and_unknown_repo_are_refused(repo):
    entries = repo_from_folder(repo)
    entries[-1] = lfs_entry(entries[-1]["path"], "0" * 64, 99)
    with FakeHub({"xai-org/grok-1": entries}) as hub:
        with pytest.raises(GrokWeightsError, match=r"has 99 bytes, the manifest's ckpt-0/tensor00002_000 has 3"):
            hub_pins(shards_of(repo), "xai-org/grok-1", endpoint=hub.url, token=False)
        with pytest.raises(GrokWeightsError, match="cannot list other/repo@main"):
            hub_pins(shards_of(repo), "other/repo", endpoint=hub.url, token=False)
        with pytest.raises(GrokWeightsError, match="cannot list xai-org/grok-1@v9"):
            hub_pins(shards_of(repo), "xai-org/grok-1", revision="v9", endpoint=hub.url, token=False)


def test_missing_extra_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(UsageError, match=r"pip install 'grokweights\[hub\]'"):
        hub_files("xai-org/grok-1", endpoint="http://127.0.0.1:9")
