"""Benchmark: ``fetch --hub`` beside a seeder, each source limited to the same rate R, whole commands.

Run: ``python tests/bench/bench_fetch_hub.py [--gib 1] [--files 8] [--rate 30M] [--workdir DIR]``
from the repository root.

Writes ``--gib`` GiB of random shards as ``rel/ckpt-0/tensor*_000``, makes a v1 torrent of ``rel/``, serves
it from one ``grokweights seed --max-upload-rate R`` process and the shards from a local imitation of the
model hub (``python -m tests.fakehub``, its content limited to R, all connections together), then times
three whole ``grokweights fetch`` commands into fresh folders: the seeder alone (``--peer``), the hub alone
(``--hub``, no peer) and both. Each ran with ``--json``; the rates are bytes over the command's wall time,
its peak RSS from ``wait4``. Targets: both >= 1.6x the seeder alone, the hub alone >= 0.9x, RSS <= 256 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GW = [sys.executable, "-m", "grokweights"]
REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def write_shards(root: Path, total: int, files: int) -> None:
    (root / "ckpt-0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(files):
        with open(root / "ckpt-0" / f"tensor{i:05d}_000", "wb") as f:
            left = total // files
            while left:
                n = min(left, 64 * MiB)
                f.write(rng.bytes(n))
                left -= n


def start(args: list[str], first_line: bool = True) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    return proc, proc.stdout.readline().strip() if first_line else ""


def run_fetch(name: str, extra: list[str], torrent: Path, dest: Path, env: dict[str, str]) -> dict:
    start_t = time.perf_counter()
    proc = subprocess.Popen([*GW, "fetch", str(torrent), "--dest", str(dest), "--listen", "127.0.0.1:0", "--no-dht",
                             "--json", "--stall-timeout", "120", *extra], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    summary = {}
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "summary":
            summary = event
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start_t
    if os.waitstatus_to_exitcode(status) != 0 or not summary.get("ok"):
        raise RuntimeError(f"{name}: fetch failed (exit {os.waitstatus_to_exitcode(status)})")
    hub = summary.get("extra", {}).get("hub", {})
    return {"wall_s": round(wall, 2), "bytes": summary["selected_bytes"],
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "hub_bytes": hub.get("hub_bytes", 0), "peer_bytes": hub.get("peer_bytes", summary["downloaded_bytes"]),
            "hash_failures": summary["hash_failures"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rate", default="30M", help="bytes per second of each source (K/M/G suffixes)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from grokweights.torrent import create_torrent
    from grokweights.torrent.session import parse_rate

    rate = parse_rate(args.rate)
    total = int(args.gib * 1024**3) // args.files * args.files
    work = Path(tempfile.mkdtemp(prefix="bench_hub_", dir=args.workdir))
    seeder = hub = None
    try:
        src = work / "src" / "rel"
        write_shards(src, total, args.files)
        torrent = create_torrent(src, work / "rel.torrent", force=True)
        hub, url = start([sys.executable, "-m", "tests.fakehub", str(src), "--rate", str(rate)])
        seeder = subprocess.Popen([*GW, "seed", str(src), "--torrent", str(torrent), "--listen", "127.0.0.1:0",
                                   "--no-dht", "--json", "--max-upload-rate", str(rate)], stdout=subprocess.PIPE,
                                  text=True)
        port = next(json.loads(line)["port"] for line in seeder.stdout if '"seeding"' in line)
        peer = ["--peer", f"127.0.0.1:{port}"]
        env = {"HF_ENDPOINT": url, "GROKWEIGHTS_DISABLE_PROGRESS": "1"}
        runs = {}
        for name, extra in (("seeder", peer), ("hub", ["--hub", "xai-org/grok-1"]),
                            ("both", [*peer, "--hub", "xai-org/grok-1"])):
            runs[name] = run_fetch(name, extra, torrent, work / f"dl-{name}", env)
            shutil.rmtree(work / f"dl-{name}")
        report(total, rate, runs)
    finally:
        for proc in (seeder, hub):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def report(total: int, rate: int, runs: dict[str, dict]) -> None:
    mbps = {k: total / v["wall_s"] / 1e6 for k, v in runs.items()}
    result = {"bytes": total, "rate_limit_mb_s": rate / 1e6, "runs": runs,
              "mb_s": {k: round(v, 1) for k, v in mbps.items()},
              "both_over_seeder": round(mbps["both"] / mbps["seeder"], 2),
              "hub_over_seeder": round(mbps["hub"] / mbps["seeder"], 2),
              "peak_rss_mib": max(r["peak_rss_mib"] for r in runs.values())}
    for name, run in runs.items():
        print(f"{name:7s} {mbps[name]:6.1f} MB/s whole command ({run['wall_s']} s), "
              f"hub {run['hub_bytes'] / 1e6:.0f} MB, peers {run['peer_bytes'] / 1e6:.0f} MB, "
              f"peak RSS {run['peak_rss_mib']} MiB")
    print(f"both / seeder alone {result['both_over_seeder']:.2f}x (target >= 1.6); hub alone / seeder alone "
          f"{result['hub_over_seeder']:.2f}x (target >= 0.9); peak RSS {result['peak_rss_mib']} MiB (target <= 256)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
