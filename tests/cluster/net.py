"""A small network of hosts inside this machine: network namespaces on one bridge, links shaped with ``tc``.

Host ``i`` is the namespace ``gwc-h<i>`` with one interface ``eth0`` (address ``198.18.0.<10+i>/24``, from the
benchmarking range) whose other end ``gwc-v<i>`` is a port of the bridge ``gwc-br0``. The bridge has no address
and the namespaces have no default route: nothing leaves the bridge. Each link is limited in both directions
by a token bucket (``tbf``): on ``eth0`` for what the host sends, on ``gwc-v<i>`` for what it receives, so a
host's download and upload are each capped at the link rate.

Everything created here is named ``gwc-*``; :func:`cleanup` removes all of it, including leftovers of a run
that crashed, and kills only processes that run inside those namespaces.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "gwc-"
BRIDGE = "gwc-br0"
SUBNET = "198.18.0"
#: per-namespace files that ``ip netns exec`` bind-mounts over /etc (used for the hosts file)
NETNS_ETC = Path("/etc/netns")
_TOOL_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


class ClusterUnavailable(RuntimeError):
    """This machine cannot build the cluster (not root, not Linux, or a kernel feature is missing)."""


def tool(name: str) -> str:
    """Absolute path of ``ip`` or ``tc`` (they often live in sbin, outside a user's PATH)."""
    found = shutil.which(name) or next((f"{d}/{name}" for d in _TOOL_DIRS if os.access(f"{d}/{name}", os.X_OK)), None)
    if found is None:
        raise ClusterUnavailable(f"`{name}` (iproute2) is not installed")
    return found


def sh(*args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run ``ip``/``tc``/... with a timeout; raise with its stderr on failure when ``check``."""
    cmd = [tool(args[0]) if args[0] in ("ip", "tc") else args[0], *args[1:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass(frozen=True)
class Host:
    """One host of the cluster: its namespace, address and the bridge end of its link."""

    index: int

    @property
    def ns(self) -> str:
        return f"{PREFIX}h{self.index}"

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def port(self) -> str:
        """The bridge end of this host's link."""
        return f"{PREFIX}v{self.index}"

    def exec_prefix(self) -> list[str]:
        """Command prefix that runs a program inside this host."""
        return [tool("ip"), "netns", "exec", self.ns]

    def endpoint(self, port: int) -> str:
        return f"{self.ip}:{port}"


# ------------------------------------------------------------------------------------------ building


def _shape(dev: str, rate_mbit: float, ns: str | None) -> None:
    """A token bucket of ``rate_mbit`` on ``dev`` (inside ``ns`` when given)."""
    burst = max(64 * 1024, int(rate_mbit * 1e6 / 8 / 250))  # about 4 ms worth of data
    prefix = ["ip", "netns", "exec", ns, "tc"] if ns else ["tc"]
    sh(*prefix, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst),
       "latency", "100ms")


def add_host(host: Host, rate_mbit: float) -> None:
    """Create ``host``'s namespace and its shaped link to the bridge."""
    inner = f"{PREFIX}i{host.index}"
    sh("ip", "netns", "add", host.ns)
    sh("ip", "link", "add", host.port, "type", "veth", "peer", "name", inner)
    sh("ip", "link", "set", inner, "netns", host.ns)
    sh("ip", "netns", "exec", host.ns, "ip", "link", "set", inner, "name", "eth0")
    sh("ip", "netns", "exec", host.ns, "ip", "addr", "add", f"{host.ip}/24", "dev", "eth0")
    sh("ip", "netns", "exec", host.ns, "ip", "link", "set", "eth0", "up")
    sh("ip", "netns", "exec", host.ns, "ip", "link", "set", "lo", "up")
    sh("ip", "link", "set", host.port, "master", BRIDGE)
    sh("ip", "link", "set", host.port, "up")
    _shape("eth0", rate_mbit, host.ns)
    _shape(host.port, rate_mbit, None)
    _hosts_file(host)


def _hosts_file(host: Host) -> None:
    """Inside the host, this machine's name resolves to the host's own address.

    gloo (jax's CPU collectives) advertises the address its host name resolves to; the namespaces share one
    host name, so each gets its own hosts file (``ip netns exec`` mounts ``/etc/netns/<ns>/hosts``).
    """
    folder = NETNS_ETC / host.ns
    folder.mkdir(parents=True, exist_ok=True)
    name = os.uname().nodename
    (folder / "hosts").write_text(f"127.0.0.1 localhost\n{host.ip} {name}\n")


def build(count: int, rate_mbit: float) -> list[Host]:
    """Remove leftovers, then create the bridge and ``count`` hosts with links of ``rate_mbit``."""
    check_capable()
    cleanup()
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "link", "set", BRIDGE, "up")
    hosts = [Host(i) for i in range(count)]
    for host in hosts:
        add_host(host, rate_mbit)
    return hosts


def check_capable() -> None:
    """Raise :class:`ClusterUnavailable` unless this is Linux, we are root and ``ip``/``tc`` exist."""
    if not os.uname().sysname == "Linux":
        raise ClusterUnavailable("network namespaces need Linux")
    if os.geteuid() != 0:
        raise ClusterUnavailable("network namespaces need root")
    tool("ip")
    tool("tc")


# ----------------------------------------------------------------------------------------- operating


def set_link(host: Host, up: bool) -> None:
    """Take ``host``'s link down (cable pulled) or bring it back up."""
    sh("ip", "link", "set", host.port, "up" if up else "down")


def link_bytes(host: Host) -> tuple[int, int]:
    """Bytes that crossed ``host``'s link so far: (received by the host, sent by the host), IP headers included."""
    down = _qdisc_sent(sh("tc", "-s", "qdisc", "show", "dev", host.port).stdout)
    up = _qdisc_sent(sh("ip", "netns", "exec", host.ns, "tc", "-s", "qdisc", "show", "dev", "eth0").stdout)
    return down, up


def _qdisc_sent(text: str) -> int:
    match = re.search(r"Sent (\d+) bytes", text)
    return int(match.group(1)) if match else 0


# ------------------------------------------------------------------------------------------ tearing down


def _names(kind: str) -> list[str]:
    if kind == "netns":
        out = sh("ip", "netns", "list", check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]
    out = sh("ip", "-o", "link", "show", check=False).stdout
    names = [m.group(1) for m in re.finditer(r"^\d+: ([^:@\s]+)", out, re.MULTILINE)]
    return [n for n in names if n.startswith(PREFIX)]


def kill_inside(ns: str) -> None:
    """Kill (TERM, then KILL) the processes running inside namespace ``ns`` - only ours live there."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline and sh("ip", "netns", "pids", ns, check=False).stdout.strip():
            time.sleep(0.1)


def cleanup() -> None:
    """Remove every ``gwc-*`` namespace, link and hosts file, killing what still runs inside them."""
    for ns in _names("netns"):
        kill_inside(ns)
        sh("ip", "netns", "del", ns, check=False)
    for name in _names("link"):
        sh("ip", "link", "del", name, check=False)
    if NETNS_ETC.is_dir():
        for folder in NETNS_ETC.glob(f"{PREFIX}*"):
            shutil.rmtree(folder, ignore_errors=True)
