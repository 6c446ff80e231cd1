"""Multi-host load and smoke: every host reshards its fetched copy, then one JAX process per host loads its slices.

Hosts 1..N hold verified copies (from the swarm scenario). Each reshards its copy into a local store for the
``data=1,model=N`` mesh, then runs :mod:`tests.cluster.worker` inside its namespace: ``jax.distributed`` with
the coordinator on host 1, one CPU device per process, gloo collectives over the shaped links. The logits of
the global forward pass are compared with one process on one device loading the origin's checkpoint (the
criterion: relative L2 <= 1e-4 in float32 and the same top-1 token at every position) and with one process on
the same N-device mesh (N simulated CPU devices, the same store), which differs only in where the partial sums
meet; each process's bytes read are compared with its share of the store: the sharded arrays split N ways
plus the replicated ones in full.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import grokweights as gw

from . import hosts as H
from .scenarios import Cluster, Run

COORDINATOR_PORT = 7650
TIMEOUT = 600
#: the project's float32 fidelity goal: relative L2 of the logits against one process, and the same top-1 token
LOGITS_TOLERANCE = 1e-4


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _reshard_all(cluster: Cluster, fetchers: list, n: int, logs: Path) -> dict:
    """Reshard every host's copy into its own store, all hosts at once; returns host -> store path."""
    stores, procs = {}, []
    for host in fetchers:
        stores[host] = cluster.dest(host) / "store"
        cmd = host.exec_prefix() + H.grokweights("reshard", str(cluster.copy_root(host)), str(stores[host]),
                                                 "--mesh", f"data=1,model={n}", "--no-verify", "-q")
        log = open(logs / f"reshard-{host.ns}.log", "w")  # noqa: SIM115 - closed below
        procs.append((host, subprocess.Popen(cmd, stdout=log, stderr=log, env=H.env()), log))
    for host, proc, log in procs:
        try:
            proc.wait(TIMEOUT)
        finally:
            log.close()
        if proc.returncode != 0:
            text = (logs / f"reshard-{host.ns}.log").read_text()[-2000:]
            raise RuntimeError(f"reshard on {host.ns} failed:\n{text}")
    return stores


def _workers(cluster: Cluster, fetchers: list, stores: dict, config_path: Path, logs: Path) -> list[dict]:
    """One worker per host, all at once; returns their reports in process order."""
    coordinator = fetchers[0].endpoint(COORDINATOR_PORT)
    procs = []
    for i, host in enumerate(fetchers):
        out = logs / f"worker-{i}"
        cmd = host.exec_prefix() + _python("-m", "tests.cluster.worker", "--coordinator", coordinator,
                                           "--processes", str(len(fetchers)), "--process", str(i),
                                           "--store", str(stores[host]), "--config", str(config_path),
                                           "--out", str(out))
        log = open(logs / f"worker-{i}.log", "w")  # noqa: SIM115 - closed below
        env = {**H.env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=_repo()), log, out))
    try:
        for proc, _, _ in procs:
            proc.wait(TIMEOUT)
    finally:
        for proc, log, _ in procs:
            if proc.poll() is None:
                proc.kill()
            log.close()
    for i, (proc, _, _) in enumerate(procs):
        if proc.returncode != 0:
            raise RuntimeError(f"worker {i} failed:\n{(logs / f'worker-{i}.log').read_text()[-3000:]}")
    return [json.loads(Path(f"{out}.json").read_text()) for _, _, out in procs]


def _reference(source: Path, config_path: Path, logs: Path, *, devices: int = 1) -> np.ndarray:
    """The logits of one process, no network: ``source`` (a checkpoint or a store) on ``devices`` simulated
    CPU devices (the mesh ``data=1,model=devices``)."""
    out = logs / f"reference-{devices}"
    cmd = _python("-m", "tests.cluster.worker", "--store", str(source), "--config", str(config_path),
                  "--out", str(out))
    env = {**H.env(), "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    with open(logs / f"reference-{devices}.log", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=log, env=env, cwd=_repo(), timeout=TIMEOUT, check=True)
    return np.load(f"{out}.npy")


def _rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _repo() -> str:
    return str(Path(__file__).resolve().parents[2])


def _shares(store: Path, n: int) -> tuple[int, int]:
    """(bytes of the store, bytes one of ``n`` processes must read: its 1/n of sharded arrays + replicated ones)."""
    plan = gw.open(store).plan
    replicated = sum(a.nbytes for a in plan.arrays if plan.factors(a) == (1,) * len(a.shape))
    return plan.total_bytes, (plan.total_bytes - replicated) // n + replicated


def load(cluster: Cluster, n: int) -> Run:
    """The multi-host load and smoke on hosts 1..n (their copies must be there, e.g. from the swarm)."""
    run = Run(f"load-{n}", n)
    fetchers = cluster.hosts[1:n + 1]
    logs = cluster.work / "logs" / run.name
    logs.mkdir(parents=True, exist_ok=True)
    config_path = logs / "config.json"
    config_path.write_text(cluster.ds.config.to_json())
    t0 = time.monotonic()
    stores = _reshard_all(cluster, fetchers, n, logs)
    run.notes["reshard_seconds"] = round(time.monotonic() - t0, 1)
    t1 = time.monotonic()
    reports = _workers(cluster, fetchers, stores, config_path, logs)
    run.seconds = round(time.monotonic() - t1, 1)
    logits = np.load(logs / "worker-0.npy")
    reference = _reference(cluster.ds.root, config_path, logs)
    same_mesh = _reference(stores[fetchers[0]], config_path, logs, devices=n)
    rel, same = _rel_l2(logits, reference), _rel_l2(logits, same_mesh)
    top1 = float(np.mean(np.argmax(logits, axis=-1) == np.argmax(reference, axis=-1)))
    total, share = _shares(stores[fetchers[0]], n)
    run.payload = [r["bytes_read"] for r in sorted(reports, key=lambda r: r["process"])]
    run.share = [share] * n
    run.host_seconds = [r["seconds"] for r in reports]
    run.notes.update(rel_l2=rel, top1_agree=top1, rel_l2_same_mesh=same, store_bytes=total,
                     devices=reports[0]["devices"], logits_shape=reports[0]["logits_shape"])
    if not rel <= LOGITS_TOLERANCE:
        run.problems.append(f"logits differ from the single-process run: relative L2 {rel:.3g} > "
                            f"{LOGITS_TOLERANCE:g}")
    if top1 < 1.0:
        run.problems.append(f"top-1 token differs from the single-process run at {1 - top1:.1%} of positions")
    for i, got in enumerate(run.payload):
        if got > 1.1 * share:
            run.problems.append(f"process {i} read {got:,} bytes > 1.1 x its share {share:,}")
    return run
