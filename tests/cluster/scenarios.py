"""The transfer scenarios: origin only, swarm, per-host layers and the faults, each timed on the shaped links.

Host 0 is the origin (it seeds the dataset); hosts 1..N fetch. Completion of a host is its fetch's ``verified``
event (every selected file hashed against the manifest's sha256); the data are then hashed again here,
independently, before a scenario counts as passed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hosts as H
from . import net, trace
from .data import NAME, Dataset, split_layers, verify_copy

#: the longest any scenario may take, per GB moved through the origin's link at the slowest rate
TIMEOUT = 600.0


@dataclass
class Run:
    """What one scenario measured."""

    name: str
    n: int
    seconds: float = 0.0  # until the last host verified
    host_seconds: list[float] = field(default_factory=list)
    payload: list[int] = field(default_factory=list)  # payload bytes each host downloaded (libtorrent)
    wire: list[int] = field(default_factory=list)  # bytes into each host over its link, headers included
    share: list[int] = field(default_factory=list)  # bytes each host needed
    from_origin: list[int] = field(default_factory=list)  # payload each host downloaded from the origin
    from_peers: list[int] = field(default_factory=list)  # ... and from the other hosts
    origin_sent: int = 0  # payload the origin uploaded
    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


class Cluster:
    """The built network, the dataset on the origin and a folder per host."""

    def __init__(self, hosts: list[net.Host], ds: Dataset, work: Path) -> None:
        self.hosts, self.ds, self.work = hosts, ds, work

    def dest(self, host: net.Host) -> Path:
        return self.work / host.ns

    def copy_root(self, host: net.Host) -> Path:
        return self.dest(host) / NAME

    def log(self, name: str, host: net.Host) -> Path:
        folder = self.work / "logs" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{host.ns}.log"

    def fresh(self, host: net.Host) -> Path:
        """Empty ``host``'s data folder."""
        shutil.rmtree(self.dest(host), ignore_errors=True)
        self.dest(host).mkdir(parents=True)
        return self.dest(host)

    def start_fetch(self, name: str, host: net.Host, fetchers: list[net.Host], *, swarm: bool,
                    layers: list[int] | None = None) -> H.Proc:
        peers = [self.hosts[0].endpoint(H.PORT)]
        if swarm:
            peers += [h.endpoint(H.PORT) for h in fetchers if h != host]
        return H.fetch(host, self.ds, self.dest(host), peers, self.log(name, host), reachable=swarm, layers=layers)


def _finish(cluster: Cluster, run: Run, t0: float, procs: dict[net.Host, H.Proc], wire0: dict, layers: dict,
            *, deadline: float) -> None:
    """Wait for every fetch's ``verified`` event, then stop all and check each copy independently."""
    for host, proc in procs.items():
        event = proc.wait_for("verified", timeout=max(1.0, deadline - time.monotonic()))
        run.host_seconds.append(round(event["time"] - t0, 2))
        if not event.get("ok"):
            run.problems.append(f"{host.ns}: fetch verification failed")
    run.seconds = max(run.host_seconds)
    for host, proc in procs.items():
        proc.stop()
        summary = proc.latest("summary") or {}
        run.payload.append(int(summary.get("downloaded_bytes", 0)))
        run.wire.append(net.link_bytes(host)[0] - wire0[host])
        run.share.append(cluster.ds.share(layers[host]) if layers.get(host) else cluster.ds.total_bytes)
        run.problems += [f"{host.ns}: {p}" for p in verify_copy(cluster.ds, cluster.copy_root(host), layers.get(host))]


def _account(cluster: Cluster, run: Run, origin: H.Proc, procs: dict[net.Host, H.Proc], links: dict,
             t0: float) -> None:
    """After every process stopped: where each host's bytes came from, what the origin sent, the series."""
    ip = cluster.hosts[0].ip
    for proc in procs.values():
        split = trace.sources(proc.events, ip)
        run.from_origin.append(split["origin"])
        run.from_peers.append(split["peers"])
    run.origin_sent = trace.sent(origin.events)
    run.notes["cpu_seconds"] = {"origin": round(origin.cpu, 2), **{h.ns: round(p.cpu, 2) for h, p in procs.items()}}
    if not run.name.startswith("origin-"):  # the series of the swarms (the origin-only ones are long and plain)
        run.notes["links"] = links
        run.notes["timelines"] = {h.ns: trace.timeline(p.events, ip, t0) for h, p in procs.items()}


def fanout(cluster: Cluster, n: int, *, swarm: bool, per_host_layers: bool = False, name: str | None = None) -> Run:
    """Hosts 1..n fetch the dataset at once, from the origin only or as a swarm; optionally a layer range each."""
    name = name or f"{'swarm' if swarm else 'origin'}-{n}"
    run = Run(name, n)
    fetchers = cluster.hosts[1:n + 1]
    split = split_layers(cluster.ds.config.num_layers, n) if per_host_layers else [None] * n
    layers = dict(zip(fetchers, split))
    for host in fetchers:
        cluster.fresh(host)
    origin = H.seed(cluster.hosts[0], cluster.ds, cluster.log(name, cluster.hosts[0]))
    try:
        wire0 = {h: net.link_bytes(h)[0] for h in fetchers}
        t0 = time.time()
        sampler = trace.LinkSampler(cluster.hosts[:n + 1]).start(t0)
        procs = {h: cluster.start_fetch(name, h, fetchers, swarm=swarm, layers=layers[h]) for h in fetchers}
        try:
            _finish(cluster, run, t0, procs, wire0, layers, deadline=time.monotonic() + TIMEOUT)
        finally:
            for proc in procs.values():
                proc.stop()
    finally:
        origin.stop()
    _account(cluster, run, origin, procs, sampler.stop(), t0)
    return run


# -------------------------------------------------------------------------------------------- faults


def _fault_run(cluster: Cluster, name: str, n: int, act: Any, *, stagger: float = 0.0) -> Run:
    """A swarm of ``n`` fetchers where ``act(run, procs, origin)`` injects a fault while they download."""
    run = Run(name, n)
    fetchers = cluster.hosts[1:n + 1]
    for host in fetchers:
        cluster.fresh(host)
    origin = H.seed(cluster.hosts[0], cluster.ds, cluster.log(name, cluster.hosts[0]))
    procs: dict[net.Host, H.Proc] = {}
    try:
        wire0 = {h: net.link_bytes(h)[0] for h in fetchers}
        t0 = time.time()
        sampler = trace.LinkSampler(cluster.hosts[:n + 1]).start(t0)
        for i, host in enumerate(fetchers):
            if i == 1 and stagger:
                time.sleep(stagger)
            procs[host] = cluster.start_fetch(name, host, fetchers, swarm=True)
        act(cluster, run, procs, origin)
        _finish(cluster, run, t0, procs, wire0, {}, deadline=time.monotonic() + TIMEOUT)
    finally:
        for proc in procs.values():
            proc.stop()
        origin.stop()
    _account(cluster, run, origin, procs, sampler.stop(), t0)
    return run


def _kill_restart(cluster: Cluster, run: Run, procs: dict, origin: H.Proc) -> None:
    host = cluster.hosts[1]
    reached = H.wait_progress(procs[host], 0.4, timeout=TIMEOUT)
    procs[host].kill()
    run.notes["killed_at"] = round(reached, 3)
    time.sleep(2.0)
    procs[host] = cluster.start_fetch(run.name, host, list(procs), swarm=True)


def _link_drop(cluster: Cluster, run: Run, procs: dict, origin: H.Proc, seconds: float = 4.0) -> None:
    host = cluster.hosts[2] if len(procs) > 1 else cluster.hosts[1]
    reached = H.wait_progress(procs[host], 0.3, timeout=TIMEOUT)
    net.set_link(host, up=False)
    try:
        time.sleep(seconds)
    finally:
        net.set_link(host, up=True)
    run.notes.update(link_down_at=round(reached, 3), link_down_seconds=seconds)


def _origin_leaves(cluster: Cluster, run: Run, procs: dict, origin: H.Proc) -> None:
    first = next(iter(procs.values()))
    first.wait_for("verified", timeout=TIMEOUT)
    others = {p.host.ns: round(H.progress(p), 3) for p in procs.values() if p is not first}
    origin.stop()
    run.notes.update(origin_left_when="first host verified a full copy", others_had=others)


FAULTS = {"kill-restart": _kill_restart, "link-drop": _link_drop, "origin-leaves": _origin_leaves}


def fault(cluster: Cluster, kind: str, n: int) -> Run:
    """One fault scenario: ``kill-restart``, ``link-drop`` or ``origin-leaves`` in a swarm of ``n``."""
    stagger = 3.0 if kind == "origin-leaves" else 0.0  # the later hosts hold part of the data when it leaves
    return _fault_run(cluster, f"fault-{kind}", n, FAULTS[kind], stagger=stagger)
