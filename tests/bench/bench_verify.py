"""Benchmark: verify throughput against `openssl dgst -sha256` over the same files, in the same run.

Writes a synthetic checkpoint of four equal ~600 MB shards (plus small ones), reads it once so it is in
the page cache, then times:

* openssl:      `openssl dgst -sha256` over every shard, one stream (SHA instructions; the bar);
* verify -j1:   grokweights.checkpoint.verify with one job;
* verify -jN:   with every usable core.

Prints the figures and the ratios (targets: verify -j1 >= 0.9x openssl; verify -j2 >= 1.8x verify -j1 on
2 cores). Usage: python tests/bench/bench_verify.py [--workdir DIR] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from grokweights.checkpoint.config import ModelConfig
from grokweights.checkpoint.hashing import default_jobs
from grokweights.checkpoint.manifest_ops import create_manifest
from grokweights.checkpoint.synth import synthesize
from grokweights.checkpoint.verify import verify

#: one layer with 3 experts and a 24K vocabulary: four equal 604 MB shards, 2.4 GB in all
CONFIG = ModelConfig(num_layers=1, emb_size=6144, num_q_heads=48, num_kv_heads=8, key_size=128, num_experts=3,
                     num_selected_experts=2, widening_factor=8, vocab_size=24576, scale_blocks=8)


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        ckpt = synthesize(work, CONFIG, seed=0)
        manifest = create_manifest(work, config=CONFIG)  # also warms the page cache
        files = [work / s.path for s in manifest.shards]
        total = manifest.total_size

        def openssl() -> None:
            for f in files:
                subprocess.run(["openssl", "dgst", "-sha256", str(f)], check=True, stdout=subprocess.DEVNULL)

        jobs = default_jobs()
        t_openssl = _best(openssl, args.repeat)
        t_one = _best(lambda: verify(work, manifest, jobs=1), args.repeat)
        t_all = _best(lambda: verify(work, manifest, jobs=jobs), args.repeat)
        assert verify(work, manifest, jobs=jobs).strict_ok
        rows = {"openssl dgst -sha256 (1 stream)": t_openssl, "verify --jobs 1": t_one, f"verify --jobs {jobs}": t_all}
        print(f"{total / 1e9:.2f} GB in {len(files)} shards at {ckpt}, page cache warm, best of {args.repeat}")
        for name, t in rows.items():
            print(f"  {name:<34} {t:6.2f} s  {total / t / 1e9:5.2f} GB/s")
        one_vs_openssl = t_openssl / t_one
        all_vs_one = t_one / t_all
        print(f"ratio verify -j1 / openssl      : {one_vs_openssl:.2f}x (target >= 0.9)")
        print(f"ratio verify -j{jobs} / verify -j1   : {all_vs_one:.2f}x (target >= 1.8 with 2 cores)")
        print(json.dumps({"bench": "verify", "bytes": total, "openssl_s": t_openssl, "verify_j1_s": t_one,
                          "verify_jN_s": t_all, "jobs": jobs, "ratio_j1_vs_openssl": round(one_vs_openssl, 3),
                          "ratio_jN_vs_j1": round(all_vs_one, 3)}))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
