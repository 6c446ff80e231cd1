"""Benchmark: reshard one full-width Grok-1 layer for data=1,model=8, against `cp` of the same bytes.

Synthesizes ``preset("grok-1", layers=1)`` (the embedding, the final norm and one decoder layer: 8.1 GB,
of which the layer is 4.9 GB) unless the work folder already holds it, warms the page cache with a first
copy, then times, in the same run:

* cp:            ``cp -r ckpt-0 copy && sync`` (the same source bytes written once, durably; in-kernel copy);
* dd:            ``dd bs=16M conv=fsync`` per file: a user-space copy (read + write through the page cache,
  durable), the limit for a program that rearranges bytes (target: reshard none >= 0.8x of it);
* reshard none:  ``grokweights.reshard(..., "data=1,model=8")`` in a fresh process (fsync per file);
* reshard zstd:  the same with ``compression="zstd"`` (level 1).

Prints throughput (source bytes / wall time), the ratio to cp (targets: >= 0.8x raw, >= 0.5x zstd) and
the reshard process's peak RSS (target <= 2 GiB). Verification is off here (it is bench_verify's job).

Usage: python tests/bench/bench_reshard.py [--workdir DIR] [--keep] [--jobs N]
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

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.synth import synthesize

_CHILD = """
import json, sys, time
from grokweights.store.reshard import reshard
start = time.perf_counter()
report = reshard(sys.argv[1], sys.argv[2], "data=1,model=8", compression=sys.argv[3], verify=False,
                 jobs=int(sys.argv[4]) or None)
print(json.dumps({"seconds": time.perf_counter() - start, "arrays": len(report.written),
                  "bytes": report.bytes_written}))
"""


def source(workdir: Path) -> Path:
    """The synthetic one-layer checkpoint (written once per work folder)."""
    src = workdir / "src"
    config = preset("grok-1", layers=1)
    if not (src / "ckpt-0" / "tensor00013_000").exists():
        print(f"synthesizing {config.num_layers} full-width layer into {src} ...", file=sys.stderr)
        synthesize(src, config)
    return src


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def time_cp(src: Path, dst: Path) -> float:
    shutil.rmtree(dst, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(src / "ckpt-0"), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(dst)
    return seconds


def time_dd(src: Path, dst: Path) -> float:
    """A user-space copy of every shard: ``dd bs=16M conv=fsync`` per file (read + write through the page cache,
    durable): the limit for a program that rearranges bytes, unlike ``cp``'s in-kernel copy_file_range."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    start = time.perf_counter()
    for f in sorted((src / "ckpt-0").iterdir()):
        subprocess.run(["dd", f"if={f}", f"of={dst / f.name}", "bs=16M", "conv=fsync", "status=none"], check=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(dst)
    return seconds


def time_reshard(src: Path, dst: Path, compression: str, jobs: int) -> dict:
    shutil.rmtree(dst, ignore_errors=True)
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0", "GROKWEIGHTS_DISABLE_PROGRESS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(src), str(dst), compression, str(jobs)],
                            stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"reshard failed (status {status})")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(wall=wall, peak_rss=usage.ru_maxrss * 1024, stored=du(dst))
    shutil.rmtree(dst)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="Folder for the checkpoint and outputs (default: a temp dir).")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    parser.add_argument("--jobs", type=int, default=0, help="reshard --jobs (default: CPUs).")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grokweights-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        src = source(workdir)
        total = du(src / "ckpt-0")
        time_cp(src, workdir / "warm")  # page cache warm-up, not timed
        cp = time_cp(src, workdir / "copy")
        dd = time_dd(src, workdir / "copy")
        rows = [("cp -r + sync", cp, None, None), ("dd conv=fsync", dd, None, None)]
        for compression in ("none", "zstd"):
            r = time_reshard(src, workdir / f"store-{compression}", compression, args.jobs)
            rows.append((f"reshard {compression}", r["wall"], r["peak_rss"], r["stored"]))
        print(f"source: {total / 1e9:.2f} GB in {len(list((src / 'ckpt-0').iterdir()))} shards; mesh data=1,model=8")
        print(f"{'':16} {'seconds':>8} {'GB/s':>6} {'vs cp':>6} {'vs dd':>6} {'peak RSS':>9} {'stored GB':>9}")
        for name, seconds, rss, stored in rows:
            rss_text = f"{rss / 2**30:.2f} GiB" if rss else ""
            stored_text = f"{stored / 1e9:.2f}" if stored else ""
            print(f"{name:16} {seconds:8.2f} {total / seconds / 1e9:6.2f} {cp / seconds:5.2f}x {dd / seconds:5.2f}x "
                  f"{rss_text:>9} {stored_text:>9}")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
