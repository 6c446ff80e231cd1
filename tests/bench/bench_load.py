"""Benchmark: load one full-width Grok-1 layer onto 8 simulated CPU devices, against the upstream approach.

Uses the work folder of bench_reshard (synthesizing ``preset("grok-1", layers=1)``, 8.1 GB, if missing),
reshards it for data=1,model=8 once, then times each method in a fresh process (8 CPU devices,
``jax.block_until_ready`` on the result):

* upstream:        for each shard, copy it to /dev/shm, ``pickle.load`` it, delete the copy, then
                   ``jax.device_put`` every array with the release's sharding (what the release's loader does);
* grokweights.runtime.load from the store;
* grokweights.runtime.load from ckpt-0 directly (the safe memory-mapped reader).

Before each method runs, the page cache of the work folder is dropped (``posix_fadvise``, our files only)
and that method's input is read once (warm), so every method starts with its input cached and the rest of
memory free: the figures compare the work each method does, not the disk or memory pressure.

Each method runs ``--repeat`` times, interleaved. Prints the best and median seconds, the speed-up over
upstream (upstream's time over the method's, paired run by run: median, min-max; target >= 3x for the store,
and the store at least as fast as ckpt-0), the bytes each method read, the process's peak RSS and its CPU
seconds (user + system: on a shared machine the steadier figure). The row
``store via ts`` reads the same store through tensorstore (``GROKWEIGHTS_STORE_IO=tensorstore``), the
reference path.

Usage: python tests/bench/bench_load.py [--workdir DIR] [--keep] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reshard import du, source  # noqa: E402

_PRELUDE = """
import json, os, sys, time
import jax
import numpy as np
from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import layout
from grokweights.sharding.mesh import GROK1_RULES
mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(1, 8), ("data", "model"))
specs = layout(preset("grok-1", layers=1))
start = time.perf_counter()
"""

_UPSTREAM = _PRELUDE + """
import pickle, shutil
import __main__
from dataclasses import dataclass
import ml_dtypes  # noqa: F401  (bfloat16 scales)

@dataclass
class QuantizedWeight8bit:
    weight: object
    scales: object

__main__.QuantizedWeight8bit = QuantizedWeight8bit
ckpt, leaves, read = sys.argv[1], [], 0
for spec in specs:
    tmp = f"/dev/shm/grokweights-bench-{os.getpid()}"
    shutil.copyfile(os.path.join(ckpt, spec.file), tmp)
    read += os.path.getsize(tmp)
    with open(tmp, "rb") as f:
        value = pickle.load(f)
    os.remove(tmp)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*GROK1_RULES.spec_for(spec.key)))
    arrays = [value.weight, value.scales] if spec.kind == "quantized" else [value]
    leaves += [jax.device_put(a, sharding) for a in arrays]
    del value, arrays
jax.block_until_ready(leaves)
print(json.dumps({"seconds": time.perf_counter() - start, "bytes_read": read}))
"""

_OURS = _PRELUDE + """
from grokweights.runtime.load import LoadStats, load
stats = LoadStats()
params = load(sys.argv[1], mesh, stats=stats)
jax.block_until_ready(params)
print(json.dumps({"seconds": time.perf_counter() - start, "bytes_read": stats.bytes_read}))
"""


def evict(path: Path) -> None:
    """Drop the page cache of every file under ``path`` (our own files only), to free memory for a run."""
    for p in path.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def warm(path: Path) -> None:
    """Read every file under ``path`` once, so each method starts from a warm page cache."""
    buf = bytearray(16 << 20)
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def run(script: str, path: Path, workdir: Path, extra_env: dict | None = None) -> dict:
    evict(workdir)
    warm(path)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "NUMPY_MADVISE_HUGEPAGE": "0", "GROKWEIGHTS_DISABLE_PROGRESS": "1", **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"benchmark process failed (status {status})")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss": usage.ru_maxrss * 1024,
            "cpu": usage.ru_utime + usage.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="Folder for the checkpoint and store (default: a temp dir).")
    parser.add_argument("--keep", action="store_true", help="Keep the store.")
    parser.add_argument("--repeat", type=int, default=2, help="Runs per method; the best is reported.")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grokweights-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "store-load"
    try:
        src = source(workdir)
        if not (store / "grokweights.json").exists():
            from grokweights.store.reshard import reshard

            reshard(src, store, "data=1,model=8", verify=False)
        total = du(src / "ckpt-0")
        methods = [("upstream", _UPSTREAM, src / "ckpt-0", None), ("load(store)", _OURS, store, None),
                   ("load(ckpt-0)", _OURS, src / "ckpt-0", None),
                   ("store via ts", _OURS, store, {"GROKWEIGHTS_STORE_IO": "tensorstore"})]
        results: dict[str, list[dict]] = {name: [] for name, *_ in methods}
        for _ in range(args.repeat):  # interleaved: this machine's memory speed varies run to run
            for name, script, path, env in methods:
                results[name].append(run(script, path, workdir, env))
        base = results["upstream"]
        print(f"checkpoint: {total / 1e9:.2f} GB; mesh data=1,model=8 on 8 CPU devices; one process; "
              f"{args.repeat} interleaved runs; ratios are upstream's time over each method's, pair by pair")
        print(f"{'':14} {'best s':>7} {'median s':>8} {'speed-up (median, min-max)':>27} {'read GB':>8} "
              f"{'peak RSS':>9} {'CPU s (median)':>14}")
        for name, runs in results.items():
            ratios = sorted(b["seconds"] / r["seconds"] for b, r in zip(base, runs, strict=True))
            secs = sorted(r["seconds"] for r in runs)
            print(f"{name:14} {secs[0]:7.2f} {median(secs):8.2f} {median(ratios):10.2f}x "
                  f"({ratios[0]:.2f}-{ratios[-1]:.2f}) {' ' * 6} {runs[0]['bytes_read'] / 1e9:8.2f} "
                  f"{max(r['peak_rss'] for r in runs) / 2**30:6.2f} GiB "
                  f"{median(r['cpu'] for r in runs):14.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(store, ignore_errors=True)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
