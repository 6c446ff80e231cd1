"""Hostile input, campaign 2: tracebacks turned into one-line errors, dry runs that create nothing, and two sources
that disagree (issue 17, defects 14, 19, 21 and "also seen").

Each case runs the CLI in a subprocess under a memory limit and a timeout (tests/hostile.py): exit 1 or 2, one
error line naming the option or file and the fix, no traceback, nothing created or changed that was not asked for.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.hostile import assert_clean_failure, assert_tree_unchanged, run_cli, tree_state

pytestmark = pytest.mark.timeout(180)

LOOPBACK = ["--listen", "127.0.0.1:0", "--no-dht"]


@pytest.fixture(scope="module")
def released(tiny_source, tmp_path_factory):
    """The tiny checkpoint, its .torrent and a manifest naming the torrent's infohash (sha256 all null)."""
    from grokweights.checkpoint.torrentfile import read_torrent
    from grokweights.torrent import create_torrent

    root = tmp_path_factory.mktemp("released")
    ckpt = root / "tiny"
    shutil.copytree(tiny_source, ckpt)
    torrent = create_torrent(ckpt, root / "tiny.torrent", piece_size=64 * 1024)
    data = json.loads((ckpt / "grokweights-manifest.json").read_text())
    data["sources"]["infohash_v1"] = read_torrent(torrent).infohash_v1
    for shard in data["shards"]:
        shard["sha256"] = None
    manifest = root / "m0.json"
    manifest.write_text(json.dumps(data))
    return ckpt, torrent, manifest, read_torrent(torrent).infohash_v1


# ----------------------------------------------------------------------------- 14: a dry run creates nothing


def test_fetch_dry_run_with_reshard_creates_nothing_and_waits_for_no_peer(released, tmp_path):
    _, _, manifest, infohash = released
    before = tree_state(tmp_path)
    result = run_cli(["fetch", f"magnet:?xt=urn:btih:{infohash}", "--manifest", manifest, "--dest", tmp_path / "D",
                      "--dry-run", "--reshard", tmp_path / "X", "--mesh", "data=1,model=2", *LOOPBACK], timeout=60)
    assert result.returncode == 0, result.stderr
    assert "26 of 26 files" in result.stdout
    assert_tree_unchanged(tmp_path, before)


@pytest.mark.parametrize("how", ["torrent-source", "magnet-with---torrent"])
def test_fetch_dry_run_with_the_metadata_at_hand_creates_nothing(released, tmp_path, how):
    _, torrent, manifest, infohash = released
    source = [torrent] if how == "torrent-source" else [f"magnet:?xt=urn:btih:{infohash}", "--torrent", torrent]
    before = tree_state(tmp_path)
    result = run_cli(["fetch", *source, "--manifest", manifest, "--dest", tmp_path / "D", "--dry-run", "--json",
                      *LOOPBACK], timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])  # JSON lines: the events, then the report
    assert report["dry_run"] and report["total_files"] >= 26 and len(report["files"]) >= 26 and report["checkpoint"]
    assert_tree_unchanged(tmp_path, before)  # no DEST, no lock, no saved .torrent


# ----------------------------------------------------------------------------- 19: tracebacks -> one line


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_plan_device_memory_that_is_not_a_number_of_gib(value):
    result = run_cli(["plan", "--mesh", "data=1,model=8", "--device-memory", value], timeout=60)
    assert_clean_failure(result, names=["--device-memory", value], codes=(2,))


@pytest.mark.parametrize("tokens", ["99999999999999999999999", "1,2,\u00b2"], ids=["huge", "superscript-two"])
def test_smoke_tokens_out_of_any_range(tiny_checkpoint, tokens):
    result = run_cli(["smoke", tiny_checkpoint, "--host-devices", "2", "--tokens", tokens], timeout=120)
    assert_clean_failure(result, names="token id")


def test_smoke_save_expect_where_nothing_can_be_written(tiny_checkpoint):
    result = run_cli(["smoke", tiny_checkpoint, "--host-devices", "2", "--save-expect", "/proc/version", "--force"],
                     timeout=180, memory=None)
    assert_clean_failure(result, names=["/proc/version", "cannot write"])


def test_torrent_create_with_a_piece_of_a_terabyte(tiny_checkpoint, tmp_path):
    result = run_cli(["torrent", "create", tiny_checkpoint, "--piece-size", "1T", "-o", tmp_path / "t.torrent"])
    assert_clean_failure(result, names=["piece size", "256 MiB"])
    assert not (tmp_path / "t.torrent").exists()


def test_synth_with_a_negative_seed(tmp_path):
    result = run_cli(["synth", "--seed", "-1", "--out", tmp_path / "s"])
    assert_clean_failure(result, names="--seed", codes=(2,))
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, option", [
    (["fetch", "grok-1", "--dest", "/dev/null", "--dry-run", *LOOPBACK], "--dest"),
    (["demo", "--workdir", "/dev/null"], "--workdir"),
], ids=["fetch-dest", "demo-workdir"])
def test_a_folder_option_given_a_device(args, option):
    assert_clean_failure(run_cli(args, timeout=60), names=["/dev/null", option, "not a folder"])


# ----------------------------------------------------------------------------- 21: the dry run's plan


@pytest.mark.parametrize("source", ["magnet", "torrent"])
def test_dry_run_on_a_disk_too_small_shows_the_plan_then_the_error(released, tmp_path, source):
    _, torrent, manifest, infohash = released
    what = [f"magnet:?xt=urn:btih:{infohash}", "--manifest", manifest] if source == "magnet" else [torrent]
    result = run_cli(["fetch", *what, "--dest", tmp_path / "D", "--dry-run", *LOOPBACK],
                     env={"GROKWEIGHTS_FREE_SPACE_BYTES": "1000"}, timeout=60)
    assert_clean_failure(result, names=["not enough free space", "1,000 available"], fix="fetch fewer files")
    assert "ckpt-0/tensor00025_000" in result.stdout and "still to fetch, 1000 B free" in result.stdout  # the plan


def test_dry_run_refuses_a_garbage_listen_address(released, tmp_path):
    _, _, manifest, infohash = released
    result = run_cli(["fetch", f"magnet:?xt=urn:btih:{infohash}", "--manifest", manifest, "--dest", tmp_path / "D",
                      "--dry-run", "--listen", "garbage", "--no-dht"], timeout=60)
    assert_clean_failure(result, names=["listen", "garbage"])
    assert not (tmp_path / "D").exists()


# ----------------------------------------------------------------------------- also seen: pin with a disagreement


def test_pin_from_torrent_with_one_disagreeing_recorded_hash_changes_nothing(released, tmp_path):
    ckpt, torrent, manifest, _ = released
    data = json.loads(manifest.read_text())
    data["shards"][3]["sha256"] = "0" * 64  # a recorded hash the torrent-proven data does not have
    edited = tmp_path / "m.json"
    edited.write_text(json.dumps(data))
    before = edited.read_bytes()
    result = run_cli(["manifest", "pin", ckpt, "--manifest", edited, "--from-torrent", torrent], timeout=120)
    assert_clean_failure(result, names=["ckpt-0/tensor00003_000", "0" * 64, "disagree"], fix="nothing pinned")
    assert edited.read_bytes() == before


# ----------------------------------------------------------------------------- outputs checked by the library too


def test_create_torrent_checks_its_output_in_the_library(tiny_checkpoint, tmp_path):
    from grokweights import create_torrent
    from grokweights.errors import UsageError

    out = tmp_path / "t.torrent"
    out.write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        create_torrent(tiny_checkpoint, out)
    assert out.read_text() == "mine"
    shard = tiny_checkpoint / "ckpt-0" / "tensor00000_000"
    before = shard.read_bytes()
    with pytest.raises(UsageError, match="checkpoint's folder"):
        create_torrent(tiny_checkpoint, shard, force=True)
    assert shard.read_bytes() == before
    with pytest.raises(UsageError, match="does not exist"):
        create_torrent(tiny_checkpoint, tmp_path / "nowhere" / "t.torrent")
    create_torrent(tiny_checkpoint, out, force=True, piece_size=16 * 1024)
    assert out.read_bytes().startswith(b"d")  # a bencoded torrent replaced the user's file, as asked


def test_smoke_checks_save_expect_before_the_run_in_the_library(tiny_checkpoint, tmp_path):
    from grokweights.errors import UsageError
    from grokweights.runtime.smoke import smoke

    out = tmp_path / "fingerprint.json"
    out.write_text("mine")
    with pytest.raises(UsageError, match="already exists"):
        smoke(tiny_checkpoint, save_expect=out)
    assert out.read_text() == "mine"
    with pytest.raises(UsageError, match="replaces only a regular file"):
        smoke(tiny_checkpoint, save_expect=tmp_path, force=True)
