"""Helpers for the torrent tests: grokweights subprocesses with JSON events, data folders, bencoding.

Every process listens on 127.0.0.1 only, with DHT, local peer discovery, UPnP and NAT-PMP off, and
peers are connected explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

LOOPBACK = "127.0.0.1:0"
GW = [sys.executable, "-m", "grokweights"]


class Proc:
    """A grokweights subprocess whose stdout JSON lines are collected by a reader thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "GROKWEIGHTS_DISABLE_PROGRESS": "1", **(env or {})}
        self.args = [*GW, *args]
        self.popen = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=full_env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self.stdout_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _take(self, line: str) -> None:
        self.stdout_lines.append(line)
        if line.startswith("{"):
            self.events.append(json.loads(line))

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON event, or None at end of output; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no event within {timeout} s from {self.args}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                return None
            self._take(line)
            if line.startswith("{"):
                return self.events[-1]

    def wait_event(self, predicate, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(deadline - time.monotonic(), 0.01))
            if event is None:
                raise AssertionError(f"{self.args} ended before the awaited event: {self.stderr()}")
            if predicate(event):
                return event

    def finish(self, timeout: float) -> int:
        """Wait for the process, drain its output; the exit code."""
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise AssertionError(f"{self.args} did not finish within {timeout} s") from None
        self._reader.join(timeout=10)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self._take(line)
        return rc

    def stderr(self) -> str:
        return self.popen.stderr.read() if self.popen.poll() is not None else ""

    def summary(self) -> dict[str, Any]:
        found = [e for e in self.events if e.get("event") == "summary"]
        assert found, f"no summary from {self.args}: {self.stdout_lines[-5:]}"
        return found[-1]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


def start_seeder(directory: Path, *extra: str) -> tuple[Proc, str, str]:
    """A ``grokweights seed`` process on 127.0.0.1; returns (process, magnet link, peer HOST:PORT)."""
    proc = Proc("seed", str(directory), "--listen", LOOPBACK, "--no-dht", "--json", *extra)
    event = proc.wait_event(lambda e: e["event"] == "seeding", timeout=60)
    return proc, event["magnet"], f"127.0.0.1:{event['port']}"


def fetch_args(source: str, dest: Path, *extra: str) -> list[str]:
    return ["fetch", source, "--dest", str(dest), "--listen", LOOPBACK, "--no-dht", "--json",
            "--stall-timeout", "30", *extra]


def write_random_files(root: Path, sizes: list[int], *, seed: int = 0) -> dict[str, str]:
    """``root/ckpt-0/tensor{i}_000`` of random bytes; returns {relative path: sha256}."""
    rng = np.random.default_rng(seed)
    (root / "ckpt-0").mkdir(parents=True, exist_ok=True)
    digests = {}
    for i, size in enumerate(sizes):
        rel = f"ckpt-0/tensor{i:05d}_000"
        data = rng.bytes(size)
        (root / rel).write_bytes(data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def corrupt_every_piece(root: Path, piece: int) -> None:
    """Flip one byte in every piece-sized stretch of every file under ``root/ckpt-0`` (in place, same size)."""
    for path in sorted((root / "ckpt-0").iterdir()):
        size = path.stat().st_size
        with open(path, "r+b") as f:
            for offset in range(100, size, piece):
                f.seek(offset)
                byte = f.read(1)
                f.seek(offset)
                f.write(bytes([byte[0] ^ 0xFF]))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bdecode(data: bytes) -> tuple[Any, bytes]:
    """An independent bencode decoder: (value, the exact bytes of the top-level 'info' value if any)."""
    spans: dict[str, tuple[int, int]] = {}

    def parse(i: int, depth: int) -> tuple[Any, int]:
        c = data[i:i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1:end]), end + 1
        if c == b"l":
            i += 1
            out = []
            while data[i:i + 1] != b"e":
                value, i = parse(i, depth + 1)
                out.append(value)
            return out, i + 1
        if c == b"d":
            i += 1
            out_d: dict[bytes, Any] = {}
            while data[i:i + 1] != b"e":
                key, i = parse(i, depth + 1)
                start = i
                out_d[key], i = parse(i, depth + 1)
                if depth == 0 and key == b"info":
                    spans["info"] = (start, i)
            return out_d, i + 1
        colon = data.index(b":", i)
        n = int(data[i:colon])
        return data[colon + 1:colon + 1 + n], colon + 1 + n

    value, end = parse(0, 0)
    assert end == len(data), "trailing bytes after the bencoded value"
    info = data[slice(*spans["info"])] if "info" in spans else b""
    return value, info


def bencode(value: Any) -> bytes:
    """A minimal bencode encoder for crafting torrents in tests."""
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
    return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
