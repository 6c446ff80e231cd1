"""Where a scenario's time goes: the links sampled over time, and the bytes each host got from the origin and peers.

Two independent views:

- **the links**: a thread reads the byte counters of every host's link (the bridge end, in this namespace:
  ``/sys/class/net/gwc-v<i>/statistics``, no process started) every ``period`` seconds, so the series show
  each host's download and upload rate over time (idle uplinks, the origin's uplink filling or not);
- **libtorrent's view**: every fetch's and the seeder's ``progress`` events carry ``by_peer``, the payload
  downloaded from and uploaded to each peer address; the last event of each host splits its bytes into
  "from the origin" and "from other hosts", and the origin's says how many copies it sent.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from .net import Host

SYS_NET = Path("/sys/class/net")


def _counter(dev: str, name: str) -> int:
    try:
        return int((SYS_NET / dev / "statistics" / name).read_text())
    except (OSError, ValueError):
        return 0


class LinkSampler:
    """Samples ``(seconds, [down per host], [up per host])`` in bytes since the start, until stopped.

    Down is what the bridge sent into the host's link, up what it received from it (Ethernet frames).
    """

    def __init__(self, hosts: list[Host], period: float = 0.5) -> None:
        self.hosts, self.period = hosts, period
        self.samples: list[tuple[float, list[int], list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0
        self._base: tuple[list[int], list[int]] = ([], [])

    def _read(self) -> tuple[list[int], list[int]]:
        return ([_counter(h.port, "tx_bytes") for h in self.hosts], [_counter(h.port, "rx_bytes") for h in self.hosts])

    def start(self, t0: float) -> LinkSampler:
        self._t0, self._base = t0, self._read()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            down, up = self._read()
            self.samples.append((round(time.time() - self._t0, 2), [d - b for d, b in zip(down, self._base[0])],
                                 [u - b for u, b in zip(up, self._base[1])]))

    def stop(self) -> dict[str, Any]:
        """Stop sampling; the series as JSON-ready lists (hosts in the order given)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        return {"hosts": [h.ns for h in self.hosts], "t": [s[0] for s in self.samples],
                "down": [s[1] for s in self.samples], "up": [s[2] for s in self.samples]}


def sources(events: list[dict[str, Any]], origin_ip: str) -> dict[str, int]:
    """``{"origin": bytes, "peers": bytes}`` a host downloaded, from its last ``progress`` event's ``by_peer``."""
    last = next((e for e in reversed(events) if e.get("event") == "progress" and "by_peer" in e), None)
    if last is None:
        return {"origin": 0, "peers": 0}
    per = last["by_peer"]
    origin = sum(down for ip, (down, _) in per.items() if ip == origin_ip)
    return {"origin": origin, "peers": sum(down for _, (down, _) in per.items()) - origin}


def timeline(events: list[dict[str, Any]], origin_ip: str, t0: float) -> dict[str, list]:
    """One host's progress over time: seconds, bytes done, bytes from the origin, bytes from peers, uploaded."""
    out: dict[str, list] = {"t": [], "done": [], "origin": [], "peers": [], "uploaded": []}
    for e in events:
        if e.get("event") != "progress" or "by_peer" not in e:
            continue
        split = sources([e], origin_ip)
        out["t"].append(round(e["time"] - t0, 2))
        out["done"].append(e.get("done", 0))
        out["origin"].append(split["origin"])
        out["peers"].append(split["peers"])
        out["uploaded"].append(e.get("uploaded", 0))
    return out


def sent(events: list[dict[str, Any]]) -> int:
    """Payload bytes a seeder uploaded, from its last ``progress`` event."""
    last = next((e for e in reversed(events) if e.get("event") == "progress"), None)
    return int(last.get("uploaded", 0)) if last else 0
