"""The GGUF vocabulary: Grok-1's SentencePiece model, or a placeholder vocabulary for running on token ids.

llama.cpp sizes ``token_embd`` by the vocabulary's token count (a ``no_vocab`` model has zero tokens and
cannot load a Grok embedding), so a model exported without ``--tokenizer`` gets a minimal valid ``llama``
(SentencePiece) vocabulary: Grok-1's four control tokens (``[PAD]``, ``[BOS]``, ``[EOS]``, ``[UNK]`` at
ids 0-3, as in its ``tokenizer.model``), the 256 byte tokens ``<0x00>``..``<0xFF>`` where they fit, and
``<|token_N|>`` for the rest. Such a model runs on token ids; text must be tokenised elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Vocab", "placeholder_vocab", "sentencepiece_vocab"]

# gguf.constants.TokenType values (kept here so planning does not import gguf)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_CONTROL = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")


@dataclass(frozen=True)
class Vocab:
    """Tokens, scores and token types of a ``llama`` (SentencePiece) GGUF vocabulary, and its special ids."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    source: str
    pad: int = 0
    bos: int = 1
    eos: int = 2
    unk: int = 3


def placeholder_vocab(size: int) -> Vocab:
    """A valid vocabulary of ``size`` tokens for a model that is run on token ids."""
    tokens = list(_CONTROL[:size])
    types = [CONTROL, CONTROL, CONTROL, UNKNOWN][:size]
    if size >= len(_CONTROL) + 256:
        tokens += [f"<0x{b:02X}>" for b in range(256)]
        types += [BYTE] * 256
    tokens += [f"<|token_{i}|>" for i in range(len(tokens), size)]
    types += [NORMAL] * (size - len(types))
    return Vocab(tokens, [0.0] * size, types, source="placeholder (token ids only)")


def sentencepiece_vocab(model: bytes, size: int, source: str = "tokenizer.model") -> Vocab:
    """The vocabulary of a SentencePiece model (the bytes of a ``tokenizer.model`` checked by
    :func:`._guard.read_tokenizer`), padded with unused tokens to ``size``."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_proto=model)
    count = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(count):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        types.append(CONTROL if sp.is_control(i) else UNKNOWN if sp.is_unknown(i) else
                     UNUSED if sp.is_unused(i) else BYTE if sp.is_byte(i) else NORMAL)
    tokens += [f"[PAD{i}]" for i in range(count, size)]
    scores += [-1000.0] * (size - count)
    types += [UNUSED] * (size - count)
    special = {sp.id_to_piece(i): i for i in range(min(count, 16))}

    def pick(found: int, name: str, default: int) -> int:
        return found if found >= 0 else special.get(name, default)

    return Vocab(tokens, scores, types, source=os.path.basename(source), pad=pick(sp.pad_id(), "[PAD]", 0),
                 bos=pick(sp.bos_id(), "[BOS]", 1), eos=pick(sp.eos_id(), "[EOS]", 2),
                 unk=pick(sp.unk_id(), "[UNK]", 3))
