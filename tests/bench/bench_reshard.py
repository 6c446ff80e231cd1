"""Benchmark: reshard one full-width Grok-1 layer for data=1,model=8, against `cp` of the same bytes.

Synthesizes ``preset("grok-1", layers=1)`` (the embedding, the final norm and one decoder layer: 8.1 GB,
of which the layer is 4.9 GB) unless the work folder already holds it, warms the page cache with a first
copy, then times, in the same run:

* cp:            ``cp -r ckpt-0 copy && sync`` (the same source bytes written once, durably; in-kernel copy);
* dd:            ``dd bs=16M conv=fsync`` per file: a user-space copy (read + write through the page cache,
  durable), the limit for a program that rearranges bytes (target: reshard none >= 0.8x of it);
* reshard none:  ``grokweights.reshard(..., "data=1,model=8")`` in a fresh process (chunks encoded and written
  by grokweights, crc32c in hardware; one ``syncfs`` per array);
* reshard ts:    the same, every chunk written through tensorstore's zarr3 driver (``GROKWEIGHTS_STORE_IO=
  tensorstore``, the reference path);
* reshard zstd:  ``compression="zstd"`` (level 1; written through tensorstore).

dd and the reshards run ``--repeat`` times, interleaved; each reshard's ratio to dd (dd's time over its time,
paired run by run; target >= 1.0x for reshard none) is printed as median (min-max), with throughput (source
bytes / wall time) and the reshard process's peak RSS (target <= 2 GiB). Verification is off here (it is
bench_verify's job).

Usage: python tests/bench/bench_reshard.py [--workdir DIR] [--keep] [--jobs N] [--repeat N] [--no-zstd]
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
from statistics import median

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


def time_reshard(src: Path, dst: Path, compression: str, jobs: int, extra_env: dict | None = None) -> dict:
    shutil.rmtree(dst, ignore_errors=True)
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0", "GROKWEIGHTS_DISABLE_PROGRESS": "1", **(extra_env or {})}
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
    parser.add_argument("--repeat", type=int, default=2, help="Interleaved runs of dd and each reshard.")
    parser.add_argument("--no-zstd", action="store_true", help="Skip the zstd reshard.")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grokweights-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        src = source(workdir)
        total = du(src / "ckpt-0")
        time_cp(src, workdir / "warm")  # page cache warm-up, not timed
        cp = time_cp(src, workdir / "copy")
        methods = [("reshard none", "none", None), ("reshard ts", "none", {"GROKWEIGHTS_STORE_IO": "tensorstore"})]
        if not args.no_zstd:
            methods.append(("reshard zstd", "zstd", None))
        dd: list[float] = []
        runs: dict[str, list[dict]] = {name: [] for name, _, _ in methods}
        for _ in range(args.repeat):
            dd.append(time_dd(src, workdir / "copy"))
            for name, compression, env in methods:
                runs[name].append(time_reshard(src, workdir / "store-bench", compression, args.jobs, env))
        print(f"source: {total / 1e9:.2f} GB in {len(list((src / 'ckpt-0').iterdir()))} shards; mesh data=1,model=8; "
              f"{args.repeat} interleaved runs")
        print(f"{'':16} {'median s':>8} {'GB/s':>6} {'vs dd: median (min-max)':>24} {'peak RSS':>9} {'stored GB':>9}")
        print(f"{'cp -r + sync':16} {cp:8.2f} {total / cp / 1e9:6.2f}")
        mid = median(dd)
        print(f"{'dd conv=fsync':16} {mid:8.2f} {total / mid / 1e9:6.2f} {'1.00x':>10}")
        for name, results in runs.items():
            ratios = sorted(d / r["wall"] for d, r in zip(dd, results, strict=True))
            secs = median(r["wall"] for r in results)
            rss, stored = max(r["peak_rss"] for r in results), results[0]["stored"]
            print(f"{name:16} {secs:8.2f} {total / secs / 1e9:6.2f} {median(ratios):9.2f}x "
                  f"({ratios[0]:.2f}-{ratios[-1]:.2f}){' ' * 4} {rss / 2**30:5.2f} GiB {stored / 1e9:9.2f}")
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
