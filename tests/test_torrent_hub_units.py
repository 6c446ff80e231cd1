"""The pieces of ``fetch --hub`` that need no network: repository names, the path table, the token's place."""

from __future__ import annotations

import pytest

from grokweights.errors import UsageError
from grokweights.torrent.hubhttp import DEFAULT_ENDPOINT, hub_endpoint, hub_token, parse_hub
from grokweights.torrent.hubseed import hub_paths, is_bridge_url


def test_parse_hub_and_its_urls(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    ref = parse_hub("xai-org/grok-1")
    assert (ref.repo, ref.revision, ref.endpoint) == ("xai-org/grok-1", "main", DEFAULT_ENDPOINT)
    assert ref.url("ckpt-0/t0") == f"{DEFAULT_ENDPOINT}/xai-org/grok-1/resolve/main/ckpt-0/t0"
    ref = parse_hub("xai-org/grok-1@refs/pr/3", endpoint="http://127.0.0.1:9/")
    assert ref.url("a b", "abc") == "http://127.0.0.1:9/xai-org/grok-1/resolve/abc/a%20b"
    assert ref.url("x") == "http://127.0.0.1:9/xai-org/grok-1/resolve/refs%2Fpr%2F3/x"  # a revision is one segment
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    assert hub_endpoint() == "https://mirror.example" and parse_hub("a/b").endpoint == "https://mirror.example"
    for bad in ("grok-1", "a/b/c", "../x", "a/..", "a/b@", "/a/b", "a/b@x y"):
        with pytest.raises(UsageError, match="expected OWNER/NAME"):
            parse_hub(bad)


def test_the_path_table_strips_the_torrents_top_folder():
    table = hub_paths(["grok-1/ckpt-0/tensor00000_000", "grok-1/README.md", "other"], "grok-1")
    assert table == {"grok-1/ckpt-0/tensor00000_000": "ckpt-0/tensor00000_000", "grok-1/README.md": "README.md",
                     "other": "other"}
    assert hub_paths(["grok-1"], "grok-1") == {"grok-1": "grok-1"}  # a single-file torrent


def test_the_token_from_env_then_the_token_file(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert hub_token() is None
    (tmp_path / "token").write_text("hf_file\n")
    assert hub_token() == "hf_file"
    other = tmp_path / "elsewhere"
    other.write_text("hf_path")
    monkeypatch.setenv("HF_TOKEN_PATH", str(other))
    assert hub_token() == "hf_path"
    monkeypatch.setenv("HF_TOKEN", " hf_env ")
    assert hub_token() == "hf_env"


def test_bridge_urls_are_recognised_so_resume_data_never_keeps_them():
    assert is_bridge_url("http://127.0.0.1:41234/grokweights-hub/s3cret/g2/")
    assert not is_bridge_url("https://mirror.example/grokweights-hub/")
    assert not is_bridge_url("http://127.0.0.1:8000/files/")


def test_the_progress_text_names_the_hubs_bytes():
    from grokweights.torrent.hubfetch import HubSource
    from grokweights.torrent.hubseed import HubBridge

    class Bar:  # the part of tqdm the fetch loop uses
        text, done = "", 0

        def set_postfix_str(self, text: str) -> None:
            self.text = text

        def update(self, n: int) -> None:
            self.done += n

    source, bar = HubSource("xai-org/grok-1", endpoint="http://127.0.0.1:9"), Bar()
    shown = source.progress(bar)
    shown.set_postfix_str("2 peers (1 seeds)")
    assert bar.text == "2 peers (1 seeds)"  # nothing from the hub yet
    source.bridge = HubBridge(source.ref)
    try:
        source.bridge.bytes_served = 1_500_000_000
        shown.set_postfix_str("2 peers (1 seeds)")
        shown.update(7)
    finally:
        source.close()
    assert bar.text == "2 peers (1 seeds), hub 1.50 GB" and bar.done == 7
    assert source.progress(None) is None
