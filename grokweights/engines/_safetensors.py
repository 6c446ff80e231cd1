"""Streaming safetensors writer: header first (sizes are known from the plan), then tensors block by block.

The ``safetensors`` library's own writers take whole tensors in memory; the file format is simple enough
to stream: an 8-byte little-endian header length, a JSON header (``dtype``, ``shape``, ``data_offsets``
per tensor, padded with spaces to 8 bytes), then the tensors' bytes back to back in header order. The
tests read every file back with the ``safetensors`` library.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import GrokWeightsError
from ._directwrite import OutputFile
from ._encode import recycle, run_ordered
from ._tensor import OutTensor

__all__ = ["group_by_size", "write_safetensors", "INDEX_NAME", "file_names"]

INDEX_NAME = "model.safetensors.index.json"
_ST_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16", "i8pack": "I32", "i64": "I64"}


def group_by_size(tensors: list[OutTensor], max_bytes: int) -> list[list[OutTensor]]:
    """Consecutive groups of tensors of at most ``max_bytes`` each (a larger tensor gets a group of its own)."""
    groups: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if groups[-1] and max_bytes and size + t.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.nbytes
    return groups


def file_names(count: int) -> list[str]:
    """``model-00001-of-0000N.safetensors`` for each of ``count`` files."""
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def _header(tensors: list[OutTensor]) -> bytes:
    entries, offset = {"__metadata__": {"format": "pt"}}, 0
    for t in tensors:
        entries[t.name] = {"dtype": _ST_DTYPE[t.dtype], "shape": list(t.shape),
                           "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_tensor(f: OutputFile, tensor: OutTensor, tasks: Iterable[Callable[[str], np.ndarray]], where: Path) -> int:
    """Write one tensor to ``f``: its block tasks run on worker threads, written in order; checks the byte count."""
    written = 0
    for data in run_ordered(tasks, lambda task: task(tensor.dtype)):
        f.write(data)
        written += data.nbytes
        recycle(data)
    if written != tensor.nbytes:
        raise GrokWeightsError(f"{where}: tensor {tensor.name} came to {written} bytes, expected {tensor.nbytes}",
                               path=where, expected=tensor.nbytes, actual=written)
    return written


def write_safetensors(folder: Path, tensors: list[OutTensor], blocks: Callable[[OutTensor], Iterator[Callable]],
                      max_bytes: int, on_tensor: Callable[[OutTensor], None] | None = None) -> list[Path]:
    """Write ``tensors`` to ``folder`` as numbered safetensors files plus the index; returns the files."""
    groups = group_by_size(tensors, max_bytes)
    names = file_names(len(groups))
    weight_map = {}
    for name, group in zip(names, groups, strict=True):
        path = folder / name
        with OutputFile.create(path) as f:
            f.write(_header(group))
            for t in group:
                write_tensor(f, t, blocks(t), path)
                weight_map[t.name] = name
                if on_tensor is not None:
                    on_tensor(t)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return [folder / n for n in names] + [folder / INDEX_NAME]
