"""Benchmark: a loopback BitTorrent transfer of synthetic shards against ``cp`` of the same bytes.

Run: ``python tests/bench/bench_fetch.py [--gib 2] [--files 8] [--workdir DIR] [--piece-size 16M]``

Writes ``--gib`` GiB of random shards, copies them with ``cp`` + ``sync`` (the baseline), makes a v1
torrent, seeds it from one ``grokweights seed`` process and fetches it into another (``grokweights
fetch --peer``, both on 127.0.0.1, DHT/LSD off), then ``sync``. Reports throughput as a ratio to
``cp``, the downloader's CPU (user + system seconds per wall second) and peak RSS (from ``wait4``), and
its RSS sampled at 25/50/75/100 % of the transfer: a flat series means memory does not grow with the
download (target: ratio >= 0.5, RSS bounded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

GW = [sys.executable, "-m", "grokweights"]
MiB = 1024 * 1024


def write_shards(root: Path, total: int, files: int) -> None:
    (root / "ckpt-0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_file = total // files
    for i in range(files):
        with open(root / "ckpt-0" / f"tensor{i:05d}_000", "wb") as f:
            left = per_file
            while left:
                n = min(left, 64 * MiB)
                f.write(rng.bytes(n))
                left -= n


def timed_cp(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start


def start_seeder(directory: Path, torrent: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([*GW, "seed", str(directory), "--torrent", str(torrent), "--listen", "127.0.0.1:0",
                             "--no-dht", "--json"], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "seeding":
            return proc, event["port"]
    raise RuntimeError("the seeder stopped before serving")


def run_fetch(torrent: Path, dest: Path, port: int, total: int) -> dict:
    """Fetch, sampling RSS along the way; CPU and peak RSS of the process from wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen([*GW, "fetch", str(torrent), "--dest", str(dest), "--listen", "127.0.0.1:0",
                             "--no-dht", "--peer", f"127.0.0.1:{port}", "--json", "--stall-timeout", "60"],
                            stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    samples: dict[int, int] = {}
    marks = [0.25, 0.5, 0.75, 1.0]
    times: dict[str, float] = {}
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "selected":
            times["selected"] = time.perf_counter()
        if event["event"] == "state" and event["state"] == "finished":
            times["finished"] = time.perf_counter()
            samples[100] = ps.memory_info().rss
        if event["event"] == "progress":
            while marks[:-1] and event["done"] >= marks[0] * total:
                samples[int(marks.pop(0) * 100)] = ps.memory_info().rss
    _, status, usage = os.wait4(proc.pid, 0)
    subprocess.run(["sync"], check=True)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"fetch failed with exit status {os.waitstatus_to_exitcode(status)}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss": usage.ru_maxrss * 1024,
            "rss_at_percent": samples, "transfer_s": times.get("finished", 0) - times.get("selected", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="GiB of shards to transfer")
    parser.add_argument("--files", type=int, default=8, help="number of shard files")
    parser.add_argument("--piece-size", default=None, help="torrent piece size, e.g. 16M (default: automatic)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the data (default: a temp dir)")
    args = parser.parse_args()
    from grokweights.torrent import create_torrent
    from grokweights.torrent.session import parse_size

    total = int(args.gib * 1024**3) // args.files * args.files
    work = Path(tempfile.mkdtemp(prefix="bench_fetch_", dir=args.workdir))
    try:
        src = work / "src" / "ckpt"
        write_shards(src, total, args.files)
        cp_s = timed_cp(src, work / "cp")
        shutil.rmtree(work / "cp")
        t0 = time.perf_counter()
        torrent = create_torrent(src, work / "ckpt.torrent", piece_size=parse_size(args.piece_size),
                                 force=True)
        create_s = time.perf_counter() - t0
        seeder, port = start_seeder(src, torrent)
        try:
            fetched = run_fetch(torrent, work / "dl", port, total)
        finally:
            seeder.terminate()
            _, _, seed_usage = os.wait4(seeder.pid, 0)
        report(total, cp_s, create_s, fetched, seed_usage)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(total: int, cp_s: float, create_s: float, fetched: dict, seed_usage: resource.struct_rusage) -> None:
    gb = total / 1e9
    result = {
        "bytes": total, "cp_s": round(cp_s, 2), "cp_gbps": round(gb / cp_s, 3),
        "create_torrent_gbps": round(gb / create_s, 3),
        "fetch_wall_s": round(fetched["wall_s"], 2), "fetch_gbps": round(gb / fetched["wall_s"], 3),
        "transfer_gbps": round(gb / fetched["transfer_s"], 3) if fetched["transfer_s"] > 0 else None,
        "ratio_to_cp": round(cp_s / fetched["wall_s"], 3),
        "downloader_cpu": round(fetched["cpu_s"] / fetched["wall_s"], 2),
        "downloader_peak_rss_mib": round(fetched["peak_rss"] / MiB, 1),
        "downloader_rss_mib_at_percent": {k: round(v / MiB, 1) for k, v in fetched["rss_at_percent"].items()},
        "seeder_cpu_s": round(seed_usage.ru_utime + seed_usage.ru_stime, 2),
        "seeder_peak_rss_mib": round(seed_usage.ru_maxrss / 1024, 1),
    }
    print(f"cp + sync          {result['cp_gbps']:.3f} GB/s ({gb:.2f} GB in {cp_s:.2f} s)")
    print(f"torrent create     {result['create_torrent_gbps']:.3f} GB/s")
    print(f"fetch + sync       {result['fetch_gbps']:.3f} GB/s (whole command), transfer phase "
          f"{result['transfer_gbps']} GB/s")
    print(f"ratio to cp        {result['ratio_to_cp']:.2f}x (target >= 0.5)")
    print(f"downloader         {result['downloader_cpu']:.2f} CPU, peak RSS {result['downloader_peak_rss_mib']} MiB, "
          f"RSS at 25/50/75/100 %: {result['downloader_rss_mib_at_percent']}")
    print(f"seeder             {result['seeder_cpu_s']} CPU s, peak RSS {result['seeder_peak_rss_mib']} MiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
