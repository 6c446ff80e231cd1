"""What an export checks of its inputs before it writes a byte: the shards' headers, their bytes, the tokenizer.

* Every shard the export reads has its header checked against the layout exactly as ``inspect`` and
  ``reshard`` check it (kind, shapes, dtypes, C order): a weight patched from ``int8`` to ``uint8`` or
  scales of zero blocks are refused, naming the file, what was expected and what was found.
* The source is verified as ``reshard`` verifies it (:func:`grokweights.checkpoint.verify.require_verified`):
  sizes, sha256 where the manifest has them, the release torrent's pieces where one lies beside the data,
  and the download's completion record. ``verify=False`` (``--no-verify``) skips only this step.
* A ``--tokenizer`` must be a regular file of at most ``MAX_TOKENIZER_BYTES`` that SentencePiece's own parser
  loads, with no more pieces than the model has embeddings; the bytes checked are the bytes written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..checkpoint.config import ModelConfig
from ..checkpoint.files import open_regular
from ..checkpoint.layout import TensorSpec, layout
from ..checkpoint.shards import read_header
from ..constants import CKPT_DIRNAME
from ..errors import GrokWeightsError, LayoutMismatchError, NotRegularFileError, UsageError

__all__ = ["source_specs", "check_shards", "verify_source", "read_tokenizer", "MAX_TOKENIZER_BYTES"]

#: a tokenizer.model larger than this is refused unread (Grok-1's is about 2.2 MB).
MAX_TOKENIZER_BYTES = 64 * 2**20


def source_specs(config: ModelConfig, keys: Iterable[str]) -> list[TensorSpec]:
    """The specs of the checkpoint tensors ``keys`` (each once, in layout order)."""
    wanted = set(keys)
    return [spec for spec in layout(config) if spec.key in wanted]


def check_shards(ckpt: Path, specs: list[TensorSpec]) -> None:
    """Every shard exists and its header matches the layout; the first problems are named together.

    Raises:
        LayoutMismatchError: a shard is missing, unreadable or disagrees with its spec.
    """
    problems = []
    for spec in specs:
        path = ckpt / spec.file
        try:
            problems += [f"{path}: {p}" for p in spec.check(read_header(path).parsed)]
        except GrokWeightsError as exc:
            problems.append(exc.message)
        except OSError as exc:
            problems.append(f"{path}: cannot read ({exc.strerror or exc})")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise LayoutMismatchError(f"{len(problems)} source shard problem(s): {'; '.join(problems[:3])}{more}; "
                                  "re-fetch the shard or check --preset/--config", path=ckpt, actual=problems)


def verify_source(ckpt: Path, manifest: Any, specs: list[TensorSpec], jobs: int | None = None) -> dict[str, Any]:
    """Verify the shards of ``specs`` against ``manifest`` (:func:`..checkpoint.verify.require_verified`)."""
    from ..checkpoint.verify import require_verified

    return require_verified(ckpt, manifest, [f"{CKPT_DIRNAME}/{s.file}" for s in specs], jobs=jobs)


def read_tokenizer(path: str | os.PathLike[str], vocab_size: int) -> bytes:
    """The bytes of a SentencePiece ``tokenizer.model``, checked: a regular file, bounded, parsed, not too large
    a vocabulary.

    Raises:
        UsageError: not found, not a regular file, too large, not a SentencePiece model, or more pieces than
            ``vocab_size``.
    """
    import sentencepiece

    name = os.fspath(path)
    fix = "pass Grok-1's SentencePiece tokenizer.model"
    try:
        with open_regular(name, what="tokenizer", fix=fix) as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(MAX_TOKENIZER_BYTES + 1) if size <= MAX_TOKENIZER_BYTES else b""
    except NotRegularFileError as exc:
        raise UsageError(exc.message, path=name, expected="a regular file", actual=exc.actual) from None
    except OSError as exc:
        raise UsageError(f"{name}: cannot read the tokenizer ({exc.strerror or exc}); {fix}", path=name) from None
    if size > MAX_TOKENIZER_BYTES or len(data) > MAX_TOKENIZER_BYTES:
        raise UsageError(f"{name}: larger than {MAX_TOKENIZER_BYTES} bytes, not a SentencePiece tokenizer.model; "
                         f"{fix}", path=name, expected=f"<= {MAX_TOKENIZER_BYTES} bytes", actual="larger")
    try:
        count = sentencepiece.SentencePieceProcessor(model_proto=data).get_piece_size()
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{name}: not a SentencePiece model ({detail}); {fix}", path=name,
                         expected="a SentencePiece tokenizer.model", actual="unreadable") from None
    if count > vocab_size:
        raise UsageError(f"{name}: {count} tokens, more than the model's vocabulary of {vocab_size}; {fix}",
                         path=name, expected=f"<= {vocab_size}", actual=count)
    return data
