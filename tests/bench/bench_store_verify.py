"""Benchmark: ``grokweights verify STORE`` against ``openssl dgst -sha256`` over the same bytes.

Uses the work folder of bench_reshard (synthesizing ``preset("grok-1", layers=1)``, 8.1 GB, if missing) and its
store for data=1,model=8 (``store-load``, as bench_load makes it), warms the page cache with the store's files,
then times, interleaved, whole processes:

* openssl:      ``openssl dgst -sha256`` of every chunk file of the store (the same bytes, hashed once, one core);
* verify:       ``grokweights verify STORE --json`` (every chunk's crc32c and place checked, every array's
  sha256 recomputed in C order and compared with the index);
* verify (ts):  the same through tensorstore's reader (``GROKWEIGHTS_STORE_IO=tensorstore``).

Prints the median seconds and openssl's time over each method's, paired run by run (median, min-max; target
>= 0.9x for verify), and each process's peak RSS.

Usage: python tests/bench/bench_store_verify.py [--workdir DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import warm  # noqa: E402
from bench_reshard import du, source  # noqa: E402


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{cmd[0]} failed (status {status})")
    return seconds, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="Folder for the checkpoint and store (default: a temp dir).")
    parser.add_argument("--repeat", type=int, default=3, help="Interleaved runs of each method.")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grokweights-bench-"))
    store = workdir / "store-load"
    if not (store / "grokweights.json").exists():
        from grokweights.store import reshard

        reshard(source(workdir), store, "data=1,model=8", verify=False)
    chunks = sorted(str(p) for p in store.rglob("*") if p.is_file() and "/c/" in str(p.relative_to(store.parent)))
    warm(store)
    cli = [sys.executable, "-m", "grokweights", "verify", str(store), "--json"]
    methods = {"openssl": (["openssl", "dgst", "-sha256", *chunks], None), "verify": (cli, None),
               "verify (ts)": (cli, {"GROKWEIGHTS_STORE_IO": "tensorstore"})}
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in methods}
    for _ in range(args.repeat):
        for name, (cmd, env) in methods.items():
            runs[name].append(timed(cmd, {"GROKWEIGHTS_DISABLE_PROGRESS": "1", **(env or {})}))
    total = du(store)
    print(f"store: {total / 1e9:.2f} GB in {len(chunks)} chunk files; {args.repeat} interleaved runs, warm page cache")
    print(f"{'':12} {'median s':>8} {'GB/s':>6} {'openssl/it: median (min-max)':>29} {'peak RSS':>9}")
    base = [s for s, _ in runs["openssl"]]
    for name, results in runs.items():
        ratios = sorted(b / s for b, (s, _) in zip(base, results, strict=True))
        secs = median(s for s, _ in results)
        print(f"{name:12} {secs:8.2f} {total / secs / 1e9:6.2f} {median(ratios):14.2f}x "
              f"({ratios[0]:.2f}-{ratios[-1]:.2f}) {max(r for _, r in results) / 2**30:9.2f} GiB")


if __name__ == "__main__":
    main()
