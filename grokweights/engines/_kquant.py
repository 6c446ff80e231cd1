"""llama.cpp's own quantizer, one block of rows at a time: K-quant mixes (``q4_k_m``, ...) without a BF16 GGUF.

``llama-quantize`` (``llama_model_quantize``) reads a whole GGUF, picks a ggml type per tensor for the
requested file type (the ``_M`` mixes give e.g. ``token_embd`` Q6_K, ``attn_v`` Q8_0 and some layers'
``ffn_down_exps`` Q6_K; a row that is not a whole number of 256-value blocks falls back to another
type), converts each tensor to float32 and quantises it row by row with ``ggml_quantize_chunk``. Here:

* **Types: llama.cpp's own choice.** A skeleton GGUF of the export (same metadata, same tensor names and
  float32 shapes, its data a sparse hole: no disk is used) goes through ``llama_model_quantize`` with
  ``dry_run`` in a child process, which computes every tensor's type without reading data; the types are
  read from its log.
* **Bytes: llama.cpp's own quantizer.** The export's float32 rows (the release dequantised exactly) go
  through ``ggml_quantize_chunk`` of the same ``libggml`` (llama-cpp-python's), block by block on the
  worker threads. ggml's row quantizers are independent per row, so the bytes are those ``llama-quantize``
  writes from a float32 GGUF of the same weights (``tests/test_export_kquant.py`` compares every tensor).

Neither memory nor disk ever holds a float32 or BF16 model: a block is a few MiB of rows.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import re
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ._tensor import GGML_BLOCKS, OutTensor

__all__ = ["FTYPES", "choose_types", "dry_run_log", "quantize_rows", "LLAMA_TYPES"]

#: file types llama.cpp's quantizer makes without an importance matrix -> ``llama_ftype``.
FTYPES = {"q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13,
          "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18}
#: the per-tensor types those choose (with fallbacks), quantised through ``ggml_quantize_chunk``.
LLAMA_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs")
_NEEDS = "llama-cpp-python (llama.cpp's library; `make test` builds it, or `pip install llama-cpp-python`)"
_LINE = re.compile(r"\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\S+), size =\s*[\d.]+ MiB(?: ->\s*[\d.]+ MiB \((\S+)\))?")
_LOCK = threading.Lock()
_GGML: ctypes.CDLL | None = None


def _llama():
    try:
        import llama_cpp
    except ImportError:
        raise UsageError(f"quantising with llama.cpp needs {_NEEDS}", expected="llama_cpp", actual="missing") from None
    return llama_cpp


def _ggml() -> ctypes.CDLL:
    """llama-cpp-python's ``libggml-base`` (the library its ``libllama`` uses), with the quantizer's signature."""
    global _GGML
    with _LOCK:
        if _GGML is None:
            folder = Path(_llama().__file__).parent / "lib"
            names = sorted(folder.glob("libggml-base.*")) or sorted(folder.glob("libggml.*"))
            if not names:
                raise UsageError(f"{folder}: no libggml-base in llama-cpp-python; reinstall {_NEEDS}", path=folder)
            lib = ctypes.CDLL(os.fspath(names[0]))
            lib.ggml_quantize_chunk.restype = ctypes.c_size_t
            lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
            _GGML = lib
    return _GGML


def _type_id(dtype: str) -> int:
    from gguf.constants import GGMLQuantizationType

    return int(GGMLQuantizationType[dtype.upper()])


def quantize_rows(values: np.ndarray, dtype: str, out: np.ndarray) -> None:
    """Quantise float32 ``values`` (rows, cols) to the ggml type ``dtype`` into ``out`` (its exact bytes)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    rows, cols = values.shape
    if not out.flags.c_contiguous:
        raise ValueError("output buffer must be contiguous")
    written = _ggml().ggml_quantize_chunk(_type_id(dtype), values.ctypes.data, out.ctypes.data, 0, rows, cols, None)
    if written != out.nbytes:
        raise ValueError(f"ggml_quantize_chunk wrote {written} bytes for {rows} rows of {cols} as {dtype}, "
                         f"expected {out.nbytes}")


def _skeleton(path: Path, tensors: list[OutTensor], write_skeleton) -> None:
    """A GGUF whose header is the export's (tensors as float32) and whose data is a sparse hole."""
    import gguf

    writer = gguf.GGUFWriter(path, "grok")
    write_skeleton(writer)
    for t in tensors:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), 4 * int(np.prod(t.shape)),
                               raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    f = writer.fout[0]
    start = f.tell() + (-f.tell() % writer.data_alignment)
    size = sum(gguf.GGUFWriter.ggml_pad(4 * int(np.prod(t.shape)), writer.data_alignment) for t in tensors)
    f.truncate(start + size)
    writer.close()


def dry_run_log(skeleton: str, ftype: int) -> tuple[int, str]:
    """``llama_model_quantize`` of ``skeleton`` with ``dry_run``: its return code and its log (run in a child)."""
    llama_cpp = _llama()
    log: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level, text, user_data):  # noqa: ARG001 - the C callback's signature
        log.append(text.decode("utf-8", "replace"))

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.dry_run, params.nthread = ftype, True, 1
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        rc = llama_cpp.llama_model_quantize(os.fsencode(skeleton), os.fsencode(skeleton + ".out"),
                                            ctypes.byref(params))
    finally:
        _restore_log(llama_cpp)
    return rc, "".join(log)


def choose_types(tensors: list[OutTensor], ftype: str, write_skeleton) -> list[OutTensor]:
    """``tensors`` (planned as float32) with the ggml type llama.cpp's quantizer gives each for ``ftype``.

    ``write_skeleton(writer)`` adds the export's metadata to a ``gguf.GGUFWriter``. The dry run runs in a child
    process (``_isolated.run_isolated``): a crash of llama.cpp there is one error line, not the end of the caller.
    """
    from .._isolated import run_isolated
    from ..constants import LLAMA_CPP_CRASH_HINT

    _llama()  # a clear refusal here when llama-cpp-python is missing
    with tempfile.TemporaryDirectory(prefix="grokweights-kquant-") as tmp:
        source = Path(tmp) / "skeleton-f32.gguf"
        _skeleton(source, tensors, write_skeleton)
        if multiprocessing.current_process().daemon:  # already a child of run_isolated: it may have none
            rc, log = dry_run_log(os.fspath(source), FTYPES[ftype])
        else:
            rc, log = run_isolated(dry_run_log, os.fspath(source), FTYPES[ftype], timeout=300,
                                   what=f"llama.cpp's quantizer choosing the {ftype} types",
                                   hint=LLAMA_CPP_CRASH_HINT)
    chosen = {m.group(1): (m.group(3) or m.group(2)).lower() for m in _LINE.finditer(log)}
    missing = [t.name for t in tensors if t.name not in chosen]
    if rc != 0 or missing:
        raise UsageError(f"llama.cpp's quantizer refused the {ftype} plan (return code {rc}; no type for "
                         f"{', '.join(missing[:3]) or 'none'}): {log[-300:].strip()}", expected=ftype, actual=rc)
    out = []
    for t in tensors:
        dtype = chosen[t.name]
        if dtype not in ("f32", "f16", "bf16") and dtype not in GGML_BLOCKS:
            raise UsageError(f"llama.cpp chose {dtype} for {t.name}, a type this export does not write",
                             expected=list(LLAMA_TYPES), actual=dtype)
        out.append(replace(t, dtype=dtype))
    return out


def _restore_log(llama_cpp) -> None:
    """Give llama-cpp-python its own log callback back."""
    try:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    except (ImportError, AttributeError):
        pass
