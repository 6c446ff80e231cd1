"""Text <-> token ids with a SentencePiece model (Grok-1's ``tokenizer.model``, 131072 pieces).

The release ships its tokenizer in the code repository, not in ``ckpt-0/``, so every command that takes
text also takes token ids. Ids are encoded without BOS/EOS, as the upstream runner does.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, UsageError

__all__ = ["Tokenizer", "parse_token_ids"]


class Tokenizer:
    """A SentencePiece model loaded from a file.

    Args:
        path: the ``.model`` file.

    Raises:
        UsageError: the file is missing or is not a SentencePiece model.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import sentencepiece

        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(f"{self.path}: tokenizer file not found; pass the SentencePiece tokenizer.model "
                             "(it is in the code repository, not in ckpt-0/) or give --tokens",
                             path=self.path, expected="a SentencePiece .model file", actual="missing")
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_file=os.fspath(self.path))
        except (RuntimeError, OSError) as exc:
            raise UsageError(f"{self.path}: not a SentencePiece model ({str(exc).strip()})", path=self.path,
                             expected="a SentencePiece .model file", actual="unreadable") from None

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS)."""
        return [int(i) for i in self._sp.encode(text)]

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``."""
        return str(self._sp.decode([int(i) for i in ids]))

    def piece(self, token: int) -> str:
        """How one token reads: its text, or its piece name (``<unk>``, ``<0x0A>``) when it has none."""
        if not 0 <= token < self.vocab_size:
            return f"<id {token}>"
        text = self._sp.decode([int(token)])
        return text if text.strip() else self._sp.id_to_piece(int(token))

    def check_fits(self, vocab_size: int) -> None:
        """Raise :class:`ConfigError` when the tokenizer has more pieces than the model has embeddings."""
        if self.vocab_size > vocab_size:
            raise ConfigError(f"{self.path}: tokenizer has {self.vocab_size} pieces but the model's vocabulary is "
                              f"{vocab_size}; use the tokenizer that belongs to this model", path=self.path,
                              expected=f"<= {vocab_size}", actual=self.vocab_size)


def parse_token_ids(text: str) -> list[list[int]]:
    """``"1,2,3"`` -> one sequence; ``"1,2,3;4,5,6"`` -> several (``;`` separates sequences).

    Raises:
        UsageError: anything but non-negative integers, or sequences of different lengths.
    """
    sequences = []
    for part in text.split(";"):
        items = [item for item in part.replace(" ", ",").split(",") if item]
        if not items or not all(item.isascii() and item.isdigit() for item in items):
            raise UsageError(f"bad token ids {text[:80]!r}: expected comma-separated non-negative integers, "
                             "sequences separated by ';' (e.g. '1,2,3;4,5,6')", expected="ids", actual=text[:80])
        too_large = next((item for item in items if len(item) > 9), None)
        if too_large is not None:  # no vocabulary has a billion tokens; int32 is what the model takes
            raise UsageError(f"bad token id {too_large[:40]}: larger than any vocabulary; give ids below the "
                             "model's vocab_size", expected="< vocab_size", actual=too_large[:40])
        sequences.append([int(item) for item in items])
    if len({len(s) for s in sequences}) > 1:
        raise UsageError(f"token sequences must have one length, got {[len(s) for s in sequences]}; pad with 0",
                         expected="equal lengths", actual=[len(s) for s in sequences])
    return sequences
