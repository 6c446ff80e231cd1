"""Commands running inside the hosts: ``grokweights seed`` and ``fetch`` through the CLI, their JSON events collected.

Every wait is bounded; a process that does not produce the awaited event in time fails the scenario with the
tail of its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data import Dataset
from .net import Host

PORT = 6881
#: a fetch gives up after this long without progress (the harness's timeouts are longer)
STALL_SECONDS = 60


def env() -> dict[str, str]:
    """The environment of commands in the hosts: this one, unbuffered, CPU-only jax."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu"}


class Proc:
    """A command running inside a host; its stdout JSON lines are collected as events as they arrive."""

    def __init__(self, host: Host, args: list[str], log: Path, *, label: str) -> None:
        self.host, self.args, self.log_path, self.label = host, args, log, label
        self.events: list[dict[str, Any]] = []
        self.cpu = 0.0  # CPU seconds used, taken when stopped
        self._lock = threading.Lock()
        self._log = open(log, "a")  # noqa: SIM115 - closed in wait()/stop()
        self._log.write(f"$ {' '.join(args)}\n")
        self._log.flush()
        self.popen = subprocess.Popen(host.exec_prefix() + args, stdout=subprocess.PIPE, stderr=self._log,
                                      text=True, env=env())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log_path.with_suffix(".jsonl"), "a") as saved:
            for line in self.popen.stdout:
                saved.write(line)
                self._add(line)

    def _add(self, line: str) -> None:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            event = {"event": "text", "text": line.rstrip()}
        event.setdefault("received", time.time())
        with self._lock:
            self.events.append(event)

    def find(self, name: str, where: Callable[[dict], bool] = lambda e: True) -> dict[str, Any] | None:
        """The first event called ``name`` that satisfies ``where``, or None."""
        with self._lock:
            return next((e for e in self.events if e.get("event") == name and where(e)), None)

    def latest(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return next((e for e in reversed(self.events) if e.get("event") == name), None)

    def wait_for(self, name: str, timeout: float, where: Callable[[dict], bool] = lambda e: True) -> dict[str, Any]:
        """Wait (at most ``timeout`` s) for an event; fail with the log if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.find(name, where)
            if event is not None:
                return event
            if self.popen.poll() is not None:
                self._reader.join(5)
                event = self.find(name, where)
                if event is not None:
                    return event
                raise RuntimeError(f"{self.label}: exited {self.popen.returncode} before '{name}'\n{self.tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.label}: no '{name}' within {timeout:.0f} s\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the command has used so far (0 once it has ended)."""
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the CLI saves its state and prints its summary), SIGKILL if it does not end in time."""
        if self.popen.poll() is None:
            self.cpu = self.cpu_seconds()
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._reader.join(5)
        self._log.close()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL: a host that crashes."""
        self.popen.kill()
        self.popen.wait(10)
        self._reader.join(5)
        self._log.close()

    def tail(self, lines: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "\n".join(text[-lines:])


def grokweights(*args: str) -> list[str]:
    """The CLI, run by this interpreter (the project's virtual environment)."""
    return [sys.executable, "-m", "grokweights", *args]


def seed(host: Host, ds: Dataset, log: Path, *, ratio: float | None = None) -> Proc:
    """Serve the origin's copy from ``host``; returns once it is checked and listening."""
    args = grokweights("seed", str(ds.root), "--torrent", str(ds.torrent), "--listen", host.endpoint(PORT),
                       "--no-dht", "--json", "-q")
    if ratio is not None:
        args += ["--seed-ratio", str(ratio)]
    proc = Proc(host, args, log, label=f"seed@{host.ns}")
    proc.wait_for("seeding", timeout=180)
    return proc


def fetch(host: Host, ds: Dataset, dest: Path, peers: list[str], log: Path, *, reachable: bool = True,
          layers: list[int] | None = None) -> Proc:
    """Fetch into ``dest`` from ``peers``, then keep seeding for the others.

    ``reachable=False`` listens on the host's loopback only: other hosts cannot connect to it, so it downloads
    from the peers it dials (the origin-only scenario) and serves no one.
    """
    listen = host.endpoint(PORT) if reachable else f"127.0.0.1:{PORT}"
    args = grokweights("fetch", str(ds.torrent), "--dest", str(dest), "--manifest", str(ds.manifest), "--no-dht",
                       "--listen", listen, "--seed", "--json", "-q", "--stall-timeout", str(STALL_SECONDS))
    for peer in peers:
        args += ["--peer", peer]
    if layers:
        args += ["--layers", f"{layers[0]}-{layers[-1]}"]
    return Proc(host, args, log, label=f"fetch@{host.ns}")


def progress(proc: Proc) -> float:
    """Fraction of the wanted bytes this fetch has (0 before its first progress event)."""
    event = proc.latest("progress")
    if not event or not event.get("wanted"):
        return 0.0
    return event["done"] / event["wanted"]


def wait_progress(proc: Proc, fraction: float, timeout: float) -> float:
    """Wait until ``proc`` holds at least ``fraction`` of what it wants; returns the fraction reached."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = progress(proc)
        if done >= fraction:
            return done
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.label}: exited {proc.popen.returncode}\n{proc.tail()}")
        time.sleep(0.1)
    raise TimeoutError(f"{proc.label}: not {fraction:.0%} done within {timeout:.0f} s\n{proc.tail()}")
