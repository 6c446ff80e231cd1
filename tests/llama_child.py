"""What the llama.cpp tests run inside a child process (grokweights._isolated.run_isolated): llama-cpp-python is
imported there only, so a crash of llama.cpp (SIGILL on a CPU it was not built for, SIGSEGV) fails one test with
its signal instead of ending the test run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from grokweights._isolated import run_isolated
from grokweights.constants import LLAMA_CPP_CRASH_HINT

#: whether llama-cpp-python is installed (found without importing it: this process never loads llama.cpp).
AVAILABLE = importlib.util.find_spec("llama_cpp") is not None
SKIP_REASON = ("llama-cpp-python is not installed (make test installs it; it builds llama.cpp from source, which "
               "needs a C++ compiler and cmake)")


def _eval_rows(path: str, rows: list[list[int]]) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, n_threads=2, logits_all=True, embedding=False,
                          vocab_only=False, verbose=False)
    out = []
    for row in rows:
        llm.reset()
        llm.eval(row)
        out.append(np.array(llm.scores[: len(row)], dtype=np.float64))
    return np.stack(out)


def _metadata(path: str) -> tuple[dict[str, str], int]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=path, n_ctx=16, vocab_only=True, verbose=False)
    return dict(llm.metadata), llm.n_vocab()


def llama_logits(path: str | Path, rows: np.ndarray) -> np.ndarray:
    """llama.cpp's logits for every position of every row of token ids (one sequence at a time)."""
    return run_isolated(_eval_rows, str(path), np.asarray(rows).tolist(), what=f"llama.cpp evaluating {path}",
                        timeout=300, hint=LLAMA_CPP_CRASH_HINT)


def llama_metadata(path: str | Path) -> tuple[dict[str, str], int]:
    """The GGUF key/values llama.cpp read and its vocabulary size."""
    return run_isolated(_metadata, str(path), what=f"llama.cpp reading {path}", timeout=120,
                        hint=LLAMA_CPP_CRASH_HINT)


def _quantize(src: str, dst: str, ftype: int) -> int:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = ftype, 2
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


def llama_quantize(src: str | Path, dst: str | Path, ftype: int) -> int:
    """``llama_model_quantize`` (what ``llama-quantize`` runs) from ``src`` to ``dst``; its return code."""
    return run_isolated(_quantize, str(src), str(dst), ftype, what=f"llama.cpp quantizing {src}", timeout=300,
                        hint=LLAMA_CPP_CRASH_HINT)


def isolated_export(*args, **kwargs):
    """``grokweights.engines.export`` in a child process: its K-quants run llama.cpp's quantizer (libggml)."""
    from grokweights.engines import export

    return run_isolated(export, *args, what="export through llama.cpp's quantizer", timeout=300,
                        hint=LLAMA_CPP_CRASH_HINT, **kwargs)
