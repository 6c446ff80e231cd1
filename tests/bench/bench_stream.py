"""Benchmark: ``fetch --reshard`` (download and convert in one pass) against the same download alone.

Synthesizes ``preset("grok-1", layers=1)`` (8.1 GB in 14 shards; shared with bench_reshard.py through
``--workdir``), writes its manifest beside it, seeds ``ckpt-0`` from one ``grokweights seed`` process on
127.0.0.1 (the seeder's upload limit applies on loopback: the session does not exempt local peers), and
times, per seeder rate, in the same run:

* fetch:          ``grokweights fetch MAGNET --manifest M`` (download, then verify: the command as used today);
* fetch+reshard:  the same with ``--reshard STORE --mesh data=1,model=8 --discard-source`` (each shard
  checked and converted as it completes, deleted once its arrays are durable; the index last).

Prints wall seconds, the ratio stream / fetch (target <= 1.1x with the seeder below conversion speed),
each process's CPU seconds and peak RSS (``wait4``; target <= 2 GiB), and the conversion's share.

Usage: python tests/bench/bench_stream.py [--workdir DIR] [--rates 150M,0] [--keep]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_reshard import du, source  # noqa: E402

GW = [sys.executable, "-m", "grokweights"]
ENV = {**os.environ, "GROKWEIGHTS_DISABLE_PROGRESS": "1"}


def manifest_for(src: Path, workdir: Path) -> Path:
    """The manifest of the synthetic checkpoint (sha256 of every shard), kept outside the seeded folder."""
    path = workdir / "manifest.json"
    if not path.is_file():
        from grokweights.checkpoint.config import preset
        from grokweights.checkpoint.manifest_ops import create_manifest

        create_manifest(src, name="grok-1-layer", config=preset("grok-1", layers=1)).save(path)
    return path


def start_seeder(folder: Path, rate: str) -> tuple[subprocess.Popen, str]:
    args = [*GW, "seed", str(folder), "--listen", "127.0.0.1:0", "--no-dht", "--json"]
    if rate != "0":
        args += ["--max-upload-rate", rate]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "seeding":
            return proc, event["magnet"]
    raise SystemExit("the seeder ended before seeding")


def run_measured(args: list[str]) -> dict:
    """Run a grokweights command: wall and CPU seconds, peak RSS (``wait4``) and its last JSON line."""
    start = time.perf_counter()
    proc = subprocess.Popen([*GW, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{args[:2]} failed (status {status}): {err[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024,
            "summary": json.loads(out.strip().splitlines()[-1])}


def one_rate(src: Path, manifest: Path, workdir: Path, rate: str) -> list[tuple[str, dict]]:
    seeder, magnet = start_seeder(src, rate)
    base = ["--manifest", str(manifest), "--listen", "127.0.0.1:0", "--no-dht", "--json", "--stall-timeout", "120"]
    rows = []
    try:
        for name, extra in (("fetch", []), ("fetch+reshard", ["--reshard", str(workdir / "store"), "--mesh",
                                                               "data=1,model=8", "--discard-source"])):
            for d in ("dl", "store"):
                shutil.rmtree(workdir / d, ignore_errors=True)
            r = run_measured(["fetch", magnet, "--dest", str(workdir / "dl"), *base, *extra])
            if name == "fetch+reshard":
                r["stored"] = du(workdir / "store")
            rows.append((name, r))
    finally:
        seeder.terminate()
        seeder.wait(timeout=30)
        for d in ("dl", "store"):
            shutil.rmtree(workdir / d, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="Folder for the checkpoint and outputs (default: a temp dir).")
    parser.add_argument("--rates", default="150M,0", help="Seeder upload limits to run (0: unlimited).")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grokweights-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        src = source(workdir)
        manifest = manifest_for(src, workdir)
        total = du(src / "ckpt-0")
        print(f"source: {total / 1e9:.2f} GB in {len(list((src / 'ckpt-0').iterdir()))} shards; mesh data=1,model=8")
        print(f"{'seeder rate':12} {'command':14} {'seconds':>8} {'GB/s':>6} {'ratio':>6} {'CPU s':>6} "
              f"{'peak RSS':>9} {'convert s':>9}")
        for rate in args.rates.split(","):
            rows = one_rate(src, manifest, workdir, rate)
            plain = rows[0][1]["wall"]
            for name, r in rows:
                convert = r["summary"].get("convert_seconds")
                print(f"{rate if rate != '0' else 'unlimited':12} {name:14} {r['wall']:8.2f} "
                      f"{total / r['wall'] / 1e9:6.2f} {r['wall'] / plain:5.2f}x {r['cpu']:6.1f} "
                      f"{r['rss'] / 2**30:6.2f} GiB {convert if convert is not None else '':>9}", flush=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
