"""Benchmark: export one full-width Grok-1 layer from a store, as BF16 GGUF, int8 (hf) and Q4_K_M, in one run.

Synthesizes ``preset("grok-1", layers=1)`` (the embedding, the final norm and one decoder layer: 8.1 GB of int8
+ float32 source) unless the work folder holds it, then, in the same run (each export in a fresh process, then
``sync``; peak RSS from ``ru_maxrss``):

1. ckpt-0 -> BF16 GGUF (the baseline source);
2. ``reshard`` into a store (mesh data=1,model=8), then the source is deleted (as ``--discard-source`` leaves
   a user): the disk never holds more than the store and one output;
3. store -> BF16 GGUF       targets: >= 0.5x the copy, peak RSS <= 2.5 GiB;
4. store -> int8 (``hf``)   targets: size within 1 % of the int8 values plus scales, >= 0.8x the copy;
5. store -> Q4_K_M GGUF     targets: peak RSS <= 4 GiB, temporary disk <= one layer.

The bar for each export is a user-space copy of its output bytes into new files (16 MiB reads and writes, then
``sync``; the output read once before, so that the copy reads from the page cache as the export reads its warm
store), made twice: the faster counts. On a disk without room for the copy, the bar is the copy made in place
(each 16 MiB read and written back at its offset), which allocates no new pages or blocks and is the stricter
bar; the row says which.
Prints one JSON object with every figure and the ratios (export throughput / copy throughput).

Usage: python tests/bench/bench_export_store.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.synth import synthesize

CONFIG_NAME = ["grok-1"]  # --preset tiny: a quick check of this script
CONFIG = preset("grok-1", layers=1)
_CHILD = """
import json, os, resource, sys, time
from grokweights.checkpoint.config import preset
from grokweights.engines import export
start = time.perf_counter()
config = preset(sys.argv[6], layers=1) if sys.argv[5] == "ckpt" else None
report = export(sys.argv[1], sys.argv[2], format=sys.argv[3], dtype=sys.argv[4], config=config, verify=False)
os.sync()
print(json.dumps({"seconds": time.perf_counter() - start, "bytes": report.bytes, "files": report.files,
                  "tensors": [[t.name, t.dtype, t.part, t.nbytes] for t in report.tensors],
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _export(src: Path, dst: Path, fmt: str, dtype: str, kind: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(dst), fmt, dtype, kind, CONFIG_NAME[0]],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _files(result: dict) -> list[Path]:
    return [p for f in result["files"] for p in ([Path(f)] if Path(f).is_file() else sorted(Path(f).iterdir()))]


def _warm(files: list[Path]) -> None:
    """Read the output once: the copy then reads it from the page cache, as the export read its (warm) store."""
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.read(16 * 2**20):
                pass


def copy_new(files: list[Path], dst: Path) -> float:
    """A user-space copy of the output bytes into new files (16 MiB reads and writes), then sync: the bar."""
    _warm(files)
    dst.mkdir()
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as fin, open(dst / path.name, "wb", buffering=0) as fout:
            while chunk := fin.read(16 * 2**20):
                fout.write(chunk)
    os.sync()
    seconds = time.perf_counter() - start
    shutil.rmtree(dst)
    return seconds


def copy_in_place(files: list[Path]) -> float:
    """Read every output byte and write it back where it was (16 MiB at a time), then sync: the bar on a disk
    without room for a second copy (stricter: no new pages or blocks are allocated)."""
    _warm(files)
    start = time.perf_counter()
    for path in files:
        with open(path, "r+b", buffering=0) as f:
            offset = 0
            while chunk := f.read(16 * 2**20):
                f.seek(offset)
                f.write(chunk)
                offset += len(chunk)
    os.sync()
    return time.perf_counter() - start


def _case(name: str, src: Path, out: Path, fmt: str, dtype: str, kind: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    dst = out / ("grok-1.gguf" if fmt == "gguf" else "grok-1")
    print(f"{name} ...", file=sys.stderr)
    result = _export(src, dst, fmt, dtype, kind)
    files = _files(result)
    written = sum(p.stat().st_size for p in files)
    room = shutil.disk_usage(out).free > written + (4 << 30)
    # twice, the faster counts: a copy's time moves by 2x with the state of the machine's memory
    copies = [copy_new(files, out.parent / "copy") if room else copy_in_place(files) for _ in range(2)]
    copy = min(copies)
    row = {"output_bytes": written, "export_s": round(result["seconds"], 2),
           "export_GBps": round(written / result["seconds"] / 1e9, 3), "copy_s": round(copy, 2),
           "copies_s": [round(c, 2) for c in copies], "copy_GBps": round(written / copy / 1e9, 3),
           "bar": "copy into new files" if room else "copy in place",
           "ratio_export_to_copy": round(copy / result["seconds"], 3),
           "peak_rss_GiB": round(result["peak_rss"] / 2**30, 3)}
    if dtype == "int8":
        parts = {}
        for _, tdtype, part, nbytes in result["tensors"]:
            key = part or ("embedding" if tdtype == "bf16" else "f32 norms and router")
            parts[key] = parts.get(key, 0) + nbytes
        release_scales = sum(math.prod(s.scales_shape) * 2 for s in _layout() if s.kind == "quantized")
        row.update({"int8_values_bytes": parts["packed"], "scales_bytes": parts["scale"],
                    "release_scales_bytes": release_scales, "embedding_bytes": parts.get("embedding", 0),
                    "weights_over_values_plus_scales": round(
                        (parts["packed"] + parts["scale"] + parts["shape"]) / (parts["packed"] + parts["scale"]), 5),
                    "weights_over_values_plus_release_scales": round(
                        (parts["packed"] + parts["scale"] + parts["shape"]) / (parts["packed"] + release_scales), 5)})
    if dtype == "q4_k_m":
        row["types"] = sorted({t[1] for t in result["tensors"]})
        row.update(_skeleton_disk(out))
    shutil.rmtree(out, ignore_errors=True)
    return row


def _layout():
    from grokweights.checkpoint.layout import layout

    return layout(CONFIG)


def _skeleton_disk(out: Path) -> dict:
    """The temporary disk of a K-quant export: the skeleton llama.cpp's dry run reads (its data a sparse hole)."""
    from grokweights.engines._gguf import metadata_writer
    from grokweights.engines._kquant import _skeleton
    from grokweights.engines._plan import plan_tensors
    from grokweights.engines._vocab import placeholder_vocab

    path = out / "skeleton.gguf"
    tensors = plan_tensors(CONFIG, "gguf", "q4_k_m", [0])
    _skeleton(path, tensors, metadata_writer(CONFIG, 1, "q4_k_m", placeholder_vocab(CONFIG.vocab_size)))
    st = path.stat()
    return {"temp_disk_allocated_bytes": st.st_blocks * 512, "temp_disk_apparent_bytes": st.st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="Keep the work folder (the store).")
    parser.add_argument("--preset", default="grok-1", help="grok-1 (the benchmark) or tiny (a quick check).")
    parser.add_argument("--skip", action="append", default=[], choices=["ckpt", "bf16", "int8", "q4_k_m"],
                        help="Leave a case out (repeatable).")
    args = parser.parse_args()
    global CONFIG
    CONFIG_NAME[0], CONFIG = args.preset, preset(args.preset, layers=1)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-export-store-"))
    src, store, out = workdir / "src", workdir / "store", workdir / "out"
    results: dict = {"machine": f"{os.cpu_count()} CPUs, shared"}
    try:
        if not (store / "grokweights.json").exists():
            if not (src / "ckpt-0").is_dir():
                print(f"synthesizing one full-width layer into {src} ...", file=sys.stderr)
                synthesize(src, CONFIG)
            if "ckpt" not in args.skip:
                results["ckpt_bf16_gguf"] = _case("ckpt-0 -> bf16 gguf", src, out, "gguf", "bf16", "ckpt")
            from grokweights.store import reshard

            print("reshard ...", file=sys.stderr)
            started = time.perf_counter()
            reshard(src, store, "data=1,model=8", config=CONFIG, verify=False)
            results["reshard_s"] = round(time.perf_counter() - started, 2)
            shutil.rmtree(src)  # as fetch --reshard --discard-source leaves a user
        for name, fmt, dtype in (("store_bf16_gguf", "gguf", "bf16"), ("store_int8_hf", "hf", "int8"),
                                 ("store_q4_k_m_gguf", "gguf", "q4_k_m")):
            if dtype not in args.skip:
                results[name] = _case(name.replace("_", " "), store, out, fmt, dtype, "store")
        print(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
