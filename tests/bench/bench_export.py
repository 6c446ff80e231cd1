"""Benchmark: export one full-width Grok-1 layer, against a user-space copy of the output bytes.

Synthesizes ``preset("grok-1", layers=1)`` (the embedding, the final norm and one decoder layer: 8.1 GB of
int8 + float32 source) unless the work folder already holds it, then times, in the same run:

* export:  ``grokweights.export(..., format=FORMAT, dtype=DTYPE)`` in a fresh process, then ``sync``;
           its peak RSS (``ru_maxrss``; target < 2.5 GiB) is reported;
* copy:    a user-space copy (16 MiB reads and writes) of the exported files into new files, then ``sync``,
           made twice, the faster counts — the bar: the same output bytes, read and written once (bf16 output
           is twice the int8 source).

Prints output bytes, seconds, throughput and the ratio export/copy (target >= 0.5x).

Usage: python tests/bench/bench_export.py [--workdir DIR] [--format gguf] [--dtype bf16] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.synth import synthesize

_CHILD = """
import json, os, resource, sys, time
from grokweights.checkpoint.config import preset
from grokweights.engines import export
start = time.perf_counter()
report = export(sys.argv[1], sys.argv[2], format=sys.argv[3], dtype=sys.argv[4], config=preset("grok-1", layers=1),
                verify=False)
os.sync()
print(json.dumps({"seconds": time.perf_counter() - start, "bytes": report.bytes, "files": report.files,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def source(workdir: Path) -> Path:
    """The synthetic one-layer checkpoint (written once per work folder)."""
    src = workdir / "src"
    if not (src / "ckpt-0" / "tensor00013_000").exists():
        print(f"synthesizing one full-width layer into {src} ...", file=sys.stderr)
        synthesize(src, preset("grok-1", layers=1))
    return src


def time_export(src: Path, dst: Path, fmt: str, dtype: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(dst), fmt, dtype], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_copy(files: list[str], dst: Path) -> float:
    """The bar: a user-space copy of the output into new files, then sync; made twice (the output read once
    before, from the page cache as the export reads its source), the faster counts."""
    from bench_export_store import copy_new  # the same bar as the store export's (this folder is on sys.path)

    paths = [Path(name) for name in files if not Path(name).is_dir()]
    shutil.rmtree(dst, ignore_errors=True)
    return min(copy_new(paths, dst) for _ in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--format", default="gguf")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        src = source(workdir)
        out = workdir / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        dst = out / ("grok-1.gguf" if args.format == "gguf" else "grok-1")
        result = time_export(src, dst, args.format, args.dtype)
        files = [str(p) for f in result["files"] for p in ([Path(f)] if Path(f).is_file() else Path(f).iterdir())]
        copy = time_copy(files, workdir / "copy")
        gb = result["bytes"] / 1e9
        print(json.dumps({
            "format": args.format, "dtype": args.dtype, "output_bytes": result["bytes"],
            "export_s": round(result["seconds"], 2), "export_GBps": round(gb / result["seconds"], 3),
            "copy_s": round(copy, 2), "copy_GBps": round(gb / copy, 3),
            "ratio_export_to_copy": round(copy / result["seconds"], 3),
            "peak_rss_GiB": round(result["peak_rss"] / 2**30, 3)}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
