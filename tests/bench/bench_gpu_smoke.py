"""Accelerator check: synthesize full-width Grok-1 layers, reshard them, smoke-test them on the devices.

The model issue's GPU check, as one script to run on a machine with an accelerator (an H200, say):

1. synthesize ``preset(--preset, layers=--layers)`` (grok-1: the embedding, the final norm and N
   full-width layers; 2 layers = 13 GB) into the work folder;
2. reshard it for ``data=1,model=<devices>`` (verification on, so the sha256 pass is timed too);
3. ``smoke`` it on every device of the default backend: load, compile and run times, tokens/s, and the
   checks (shape, finite, deterministic, and ``--check-mesh single`` when the model fits one device);
   (the store is read once before, so that it loads from a warm page cache as ``ckpt-0`` does: reshard
   writes past the cache);
4. load the same layers from ``ckpt-0`` directly (the baseline the store must beat) and measure the
   host-to-device bandwidth (``jax.device_put`` of a 1 GiB host buffer to every device, best of 3), printed next
   to the store's load rate;
5. print each stage's seconds and bytes, the devices and their peak memory, the process's peak host RSS
   (before the bandwidth probe), and one JSON line.

It runs on CPUs too (``--preset tiny`` takes seconds) so it can be checked anywhere before the
accelerator time is spent. Usage:

    python tests/bench/bench_gpu_smoke.py [--preset grok-1] [--layers 2] [--workdir DIR] [--keep]
        [--batch 1] [--length 32] [--check-mesh]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.manifest_ops import create_manifest
from grokweights.checkpoint.synth import synthesize
from grokweights.constants import LOCAL_MANIFEST_NAME
from grokweights.store.reshard import reshard


def _timed(label: str, fn, results: dict):
    start = time.perf_counter()
    value = fn()
    results[label] = round(time.perf_counter() - start, 3)
    print(f"{label:<10} {results[label]:8.2f} s", file=sys.stderr)
    return value


def _host_to_device(devices, nbytes: int = 1 << 30) -> float:
    """Bytes per second of ``jax.device_put`` from one host buffer to every device (best of 3)."""
    import jax
    import numpy as np

    host = np.ones(nbytes, np.uint8)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready([jax.device_put(host, d) for d in devices])
        best = min(best, time.perf_counter() - start)
    return nbytes * len(devices) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="grok-1", choices=["grok-1", "tiny"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--check-mesh", action="store_true", help="Also compare with a single-device run.")
    args = parser.parse_args()

    import jax

    from grokweights.runtime.smoke import smoke

    config = preset(args.preset, layers=args.layers)
    devices = jax.devices()
    mesh = f"data=1,model={len(devices)}"
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    seconds: dict[str, float] = {}
    try:
        _timed("synth", lambda: synthesize(work / "src", config, seed=0), seconds)
        manifest = _timed("manifest", lambda: create_manifest(work / "src", config=config), seconds)
        manifest.save(work / "src" / LOCAL_MANIFEST_NAME)
        resharded = _timed("reshard", lambda: reshard(work / "src", work / "store", mesh), seconds)
        tokens = [[(7 * i + 3 * row + 1) % config.vocab_size or 1 for i in range(args.length)]
                  for row in range(args.batch)]
        # both loads start from a warm page cache: reshard writes its chunks past the cache (O_DIRECT), while
        # synth left ckpt-0 cached; each input is read once before its load (bench_load.py does the same)
        from bench_load import warm  # this folder is on sys.path

        _timed("warm store", lambda: warm(work / "store"), seconds)
        report = _timed("smoke", lambda: smoke(work / "store", mesh=mesh, tokens=tokens,
                                               check_mesh="single" if args.check_mesh else None), seconds)
        from grokweights.runtime.load import LoadStats, load

        ckpt_stats = LoadStats()
        warm(work / "src")
        jax.block_until_ready(load(work / "src", mesh, stats=ckpt_stats))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the bandwidth probe's buffers
        h2d = _host_to_device(devices)
        memory = [d.memory_stats() or {} for d in devices[: len(devices)]]
        peak = max((m.get("peak_bytes_in_use", 0) for m in memory), default=0)
        summary = {
            "bench": "gpu_smoke", "preset": args.preset, "layers": args.layers, "mesh": mesh,
            "devices": [f"{d.platform}:{d.device_kind}" for d in devices], "checkpoint_bytes": manifest.total_size,
            "store_bytes": resharded.bytes_written, "stage_seconds": seconds, "load_seconds": report.load_seconds,
            "load_bytes": report.load_bytes, "compile_seconds": report.compile_seconds,
            "run_seconds": report.run_seconds, "tokens_per_second": report.tokens_per_second,
            "peak_device_bytes": peak, "checks": {c.name: c.ok for c in report.checks}, "ok": report.ok,
            "load_ckpt_seconds": ckpt_stats.seconds, "host_to_device_bytes_per_second": h2d,
            "peak_host_rss": rss,
        }
        print(f"devices    {len(devices)} x {devices[0].device_kind} ({devices[0].platform}), mesh {mesh}")
        print(f"checkpoint {manifest.total_size / 1e9:.2f} GB, store {resharded.bytes_written / 1e9:.2f} GB")
        print(f"load       {report.load_seconds:.2f} s ({report.load_bytes / 1e9:.2f} GB, "
              f"{report.load_bytes / report.load_seconds / 1e9:.2f} GB/s; host->device {h2d / 1e9:.2f} GB/s)")
        print(f"load ckpt  {ckpt_stats.seconds:.2f} s from ckpt-0 (the store's load: "
              f"{ckpt_stats.seconds / report.load_seconds:.2f}x faster)")
        print(f"host RSS   peak {summary['peak_host_rss'] / 2**30:.2f} GiB")
        print(f"compile    {report.compile_seconds:.2f} s")
        print(f"run        {report.run_seconds * 1e3:.1f} ms ({report.tokens_per_second:.0f} tokens/s)")
        print(f"memory     peak {peak / 2**30:.2f} GiB per device (as the backend reports it)")
        print(f"checks     {', '.join(f'{c.name}={c.ok}' for c in report.checks)}")
        print(json.dumps(summary))
        raise SystemExit(0 if report.ok else 1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
