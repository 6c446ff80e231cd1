"""Hostile torrents, magnet links and manifests against ``fetch``, ``seed`` and ``torrent``: each case must end
with exit status 1 or 2 and one line on stderr naming the file and the fix, no traceback, within a time and
memory limit, and nothing written outside the destination.

No peer is needed: every case is refused before a session would wait for one (``--stall-timeout`` bounds
the rest). Processes listen on 127.0.0.1 only, with DHT and local peer discovery off.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from grokweights.checkpoint.bencode import encode

pytestmark = pytest.mark.timeout(120)

LOOPBACK = "127.0.0.1:0"
MEMORY_LIMIT = 4 << 30
INFOHASH = "ab" * 20


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(args: list[str], *, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """``grokweights ARGS`` in ``cwd`` under a memory limit and a timeout."""
    env = {**os.environ, "GROKWEIGHTS_DISABLE_PROGRESS": "1"}
    env.pop("GROKWEIGHTS_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "grokweights", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, preexec_fn=_limits, check=False)


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def assert_refused(result: subprocess.CompletedProcess, *names: str, codes: tuple[int, ...] = (1, 2)) -> str:
    """Exit 1/2, exactly one line on stderr, no traceback, naming every one of ``names``."""
    err = result.stderr.strip()
    assert result.returncode in codes, (result.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("grokweights: error: "), err
    for name in names:
        assert name in err, (name, err)
    return err


def info_dict(name: str | bytes = "ckpt", files: list | None = None, **extra) -> dict:
    info = {"name": name, "piece length": 16384, "pieces": b"\0" * 20, **extra}
    if files is None:
        info["length"] = 10
    else:
        info["files"] = files
    return info


@pytest.fixture
def work(tmp_path) -> Path:
    """A working folder; the test asserts that nothing appears in it but under ``dest``."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def _fetch(source: str, *extra: str) -> list[str]:
    return ["fetch", source, "--dest", "dest", "--listen", LOOPBACK, "--no-dht", "--stall-timeout", "5", *extra]


def _refused_fetch(work: Path, source: str, *names: str, extra: tuple[str, ...] = (), codes=(1, 2)) -> str:
    before = _tree(work)
    err = assert_refused(run_cli(_fetch(source, *extra), cwd=work), *names, codes=codes)
    after = {p for p in _tree(work) - before if p != "dest" and not p.startswith("dest/")}
    assert not after, after
    return err


# --------------------------------------------------------------------------- 1. no libtorrent tracebacks

@pytest.mark.parametrize("content", [
    b"garbage",
    b"",
    encode({"info": {"name": "x", "length": 10}}),  # no piece length, no pieces
    encode({"info": info_dict()})[:-7],  # truncated
    b"d4:info" + b"l" * 5000 + b"e" * 5000 + b"e",  # deep nesting
])
def test_malformed_torrent_file_is_one_line(work, content):
    (work / "bad.torrent").write_bytes(content)
    err = _refused_fetch(work, "bad.torrent", "bad.torrent", codes=(1,))
    assert "not a valid .torrent file" in err and "download the .torrent again" in err


@pytest.mark.parametrize("magnet", ["magnet:?xt=urn:btih:zz", "magnet:?dn=nothing", "magnet:?xt=urn:btih:" + "g" * 40,
                                    "magnet:"])
def test_malformed_magnet_is_a_usage_error(work, magnet):
    err = _refused_fetch(work, magnet, "bad magnet link", codes=(2,))
    assert "magnet:?xt=urn:btih:<40 hex digits>" in err


def test_torrent_that_is_not_a_regular_file(work):
    os.mkfifo(work / "fifo.torrent")
    _refused_fetch(work, "fifo.torrent", "fifo.torrent", "not a regular file", codes=(2,))
    (work / "dir.torrent").mkdir()
    _refused_fetch(work, "dir.torrent", "dir.torrent", "not a regular file", codes=(2,))


def test_corrupt_saved_torrent_in_dest_is_named(work):
    (work / "dest").mkdir()
    (work / "dest" / f"{INFOHASH}.torrent").write_bytes(b"d4:infoi3ee")
    _refused_fetch(work, f"magnet:?xt=urn:btih:{INFOHASH}", f"{INFOHASH}.torrent", codes=(1,))


def test_describe_torrent_and_seed_refuse_a_corrupt_torrent(work):
    from grokweights.errors import TorrentError
    from grokweights.torrent import describe_torrent

    (work / "bad.torrent").write_bytes(b"garbage")
    with pytest.raises(TorrentError, match="bad.torrent: not a valid .torrent file"):
        describe_torrent(work / "bad.torrent")
    (work / "data").mkdir()
    (work / "data" / "a").write_bytes(b"x" * 100)
    result = run_cli(["seed", "data", "--torrent", "bad.torrent", "--listen", LOOPBACK, "--no-dht",
                      "--seed-time", "0"], cwd=work)
    assert_refused(result, "bad.torrent", codes=(1,))


def test_seed_skips_a_corrupt_torrent_beside_the_data(work):
    """A stray corrupt ``*.torrent`` beside DIR is skipped with a warning naming it; the data is served."""
    top = work / "top"
    top.mkdir()
    (top / "a").write_bytes(b"x" * 100)
    (work / "junk.torrent").write_bytes(b"garbage")
    (top / "other.torrent").write_bytes(encode({"info": {"name": "x"}}))
    result = run_cli(["seed", "top", "--listen", LOOPBACK, "--no-dht", "--seed-time", "0"], cwd=work)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "skipping" in result.stderr and "junk.torrent" in result.stderr and "other.torrent" in result.stderr
    assert result.stdout.startswith("magnet:?xt=urn:btih:")


# ------------------------------------------------------------- 2. a manifest of another torrent, refused up front

GROK1 = "5f96d43576e3d386c9ba65b883210a393b68210e"


def test_magnet_of_another_torrent_than_the_manifest_is_refused_up_front(work):
    err = _refused_fetch(work, f"magnet:?xt=urn:btih:{INFOHASH}", INFOHASH, GROK1, "grok-1",
                         extra=("--manifest", "grok-1"), codes=(1,))
    assert "nothing was fetched" in err
    assert not (work / "dest" / f"{INFOHASH}.torrent").exists()


def test_torrent_file_of_another_torrent_than_the_manifest_is_refused(work):
    (work / "other.torrent").write_bytes(encode({"info": info_dict("other")}))
    _refused_fetch(work, "other.torrent", "other.torrent", GROK1, extra=("--manifest", "grok-1"), codes=(1,))
    assert not (work / "dest" / "other").exists()


def test_manifest_whose_magnet_and_infohash_disagree_is_refused(work):
    import json

    from grokweights.checkpoint.manifest import load_manifest

    data = load_manifest("grok-1").to_dict()
    data["sources"]["magnet"] = f"magnet:?xt=urn:btih:{INFOHASH}"
    (work / "m.json").write_text(json.dumps(data))
    _refused_fetch(work, "m.json", "m.json", INFOHASH, GROK1, codes=(1,))


# ------------------------------------------------- 3. names libtorrent would read differently, or on our own files

_SHARD = {"path": ["ckpt-0", "tensor00000_000"], "length": 10}


@pytest.mark.parametrize("info, why", [
    (info_dict("ckpt", [_SHARD], **{"name.utf-8": "other"}), "name.utf-8 'other' differs from its name"),
    (info_dict("ckpt", [_SHARD], **{"name.utf-8": ".."}), "differs from its name"),
    (info_dict("ckpt", [{**_SHARD, "path.utf-8": ["ckpt-0", "tensor00001_000"]}]), "path.utf-8"),
    (info_dict("ckpt", [{**_SHARD, "path.utf-8": ["..", "x"]}]), "path.utf-8"),
    (info_dict(".grokweights", [_SHARD]), "own state folder"),
    (info_dict(".GrokWeights", [_SHARD]), "own state folder"),
    (info_dict(".grokweights"), "own state folder"),  # single file
    (info_dict("ckpt", [{"path": [".grokweights", "x.complete"], "length": 10}]), "own state folder"),
    (info_dict(f"{INFOHASH}.torrent"), "<infohash>.torrent"),
    (info_dict(f"{INFOHASH.upper()}.TORRENT", [_SHARD]), "<infohash>.torrent"),
    (info_dict(b"ckpt", [{"path": "ckpt-0/x", "length": 10}]), "no path list"),
    (info_dict(b"ckpt", [{"path": [1, 2], "length": 10}]), "not a string"),
    ({**info_dict(), "name": 5}, "not a string"),
])
def test_names_libtorrent_would_read_otherwise_or_that_collide_are_refused(info, why):
    from grokweights.errors import TorrentError
    from grokweights.torrent.meta import check_info_dict

    with pytest.raises(TorrentError, match="evil.torrent") as caught:
        check_info_dict(encode(info), where="evil.torrent")
    assert why in str(caught.value) and "nothing was written" in str(caught.value)


def test_agreeing_utf8_names_pass():
    from grokweights.torrent.meta import check_info_dict

    check_info_dict(encode(info_dict("ckpt", [{**_SHARD, "path.utf-8": _SHARD["path"]}], **{"name.utf-8": "ckpt"})))
    check_info_dict(encode(info_dict("grokweights", [{"path": ["a.torrent"], "length": 1}])))


def test_fetch_of_a_torrent_with_a_differing_utf8_name_writes_nothing(work):
    (work / "evil.torrent").write_bytes(encode({"info": info_dict("ckpt", [_SHARD], **{"name.utf-8": "other"})}))
    _refused_fetch(work, "evil.torrent", "evil.torrent", "name.utf-8", codes=(1,))
    assert not (work / "dest" / "ckpt").exists() and not (work / "dest" / "other").exists()
    (work / "state.torrent").write_bytes(encode({"info": info_dict(".grokweights")}))
    _refused_fetch(work, "state.torrent", "state.torrent", "state folder", codes=(1,))
