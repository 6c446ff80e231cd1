"""Benchmark: verification by v1 piece hashes, and pinning (SHA-1 + sha256 in one read), against openssl.

Writes ~2 GB of random data as shards whose sizes are not multiples of the piece size (so pieces span
files), makes a v1 torrent of it with libtorrent (1 MiB pieces), reads it once so it is in the page cache,
then times, interleaved, best of N:

* openssl sha1:   `openssl dgst -sha1` over every shard, one stream (the bar for pieces);
* pieces:         check_copy(..., sha256=False): SHA-1 per piece, one sequential read;
* openssl sha256: `openssl dgst -sha256` over every shard, one stream (the bar for pinning);
* pin:            check_copy(..., sha256=True): SHA-1 per piece and sha256 per file in the same read.

and the peak RSS of a fresh process that runs the pin pass. Targets: pieces >= 0.9x openssl sha1, pin >=
0.8x openssl sha256, RSS < 200 MB. Usage: python tests/bench/bench_pieces.py [--workdir DIR] [--repeat 3]
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

import grokweights
from grokweights.checkpoint.pieces import check_copy, decide
from grokweights.checkpoint.torrentfile import read_torrent

PIECE = 1024 * 1024
SHARDS = 24
SHARD_BYTES = 2_000_000_000 // SHARDS

RSS_CODE = """
import json, resource, sys
from grokweights.checkpoint.pieces import check_copy, decide
from grokweights.checkpoint.torrentfile import read_torrent
meta = read_torrent(sys.argv[1])
verdicts = decide(check_copy(meta, sys.argv[2], sha256=True))
assert {v.status for v in verdicts.values()} == {"ok"}, verdicts
print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def make_release(root: Path) -> Path:
    """Random shards of slightly different sizes, and a torrent of them."""
    (root / "ckpt-0").mkdir(parents=True, exist_ok=True)
    blocks = [os.urandom(16 * 1024 * 1024), os.urandom(16 * 1024 * 1024)]
    for i in range(SHARDS):
        size, block = SHARD_BYTES + 4099 * i + 1, blocks[i % 2]
        with open(root / "ckpt-0" / f"tensor{i:05d}_000", "wb") as fh:
            for start in range(0, size, len(block)):
                fh.write(block[:size - start])
    return grokweights.create_torrent(root, root.parent / "bench.torrent", piece_size=PIECE)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-pieces-"))
    try:
        root = work / "release"
        torrent = make_release(root)
        meta = read_torrent(torrent)
        files = [str(root / f.path) for f in meta.files]
        total = meta.total_size

        def openssl(algo: str):
            return lambda: subprocess.run(["openssl", "dgst", f"-{algo}", *files], check=True,
                                          stdout=subprocess.DEVNULL)

        def pieces(sha256: bool):
            def run() -> None:
                verdicts = decide(check_copy(meta, root, sha256=sha256))
                assert all(v.status == "ok" for v in verdicts.values())
            return run

        runs = {"openssl_sha1": openssl("sha1"), "pieces": pieces(False),
                "openssl_sha256": openssl("sha256"), "pin": pieces(True)}
        openssl("sha1")()  # warm the page cache
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeat):
            for name, fn in runs.items():
                best[name] = min(best[name], _timed(fn))
        rss = subprocess.run([sys.executable, "-c", RSS_CODE, str(torrent), str(root)], check=True,
                             capture_output=True, text=True)
        report = {
            "bytes": total, "piece_length": PIECE, "pieces": meta.num_pieces, "files": len(files),
            "seconds": {k: round(v, 3) for k, v in best.items()},
            "gb_per_s": {k: round(total / v / 1e9, 3) for k, v in best.items()},
            "pieces_vs_openssl_sha1": round(best["openssl_sha1"] / best["pieces"], 3),
            "pin_vs_openssl_sha256": round(best["openssl_sha256"] / best["pin"], 3),
            **json.loads(rss.stdout),
        }
        print(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
