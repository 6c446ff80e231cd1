"""A fingerprint of a forward pass's logits, saved once and checked later (``smoke --expect``).

It records what was run (token ids, layers, dtype, vocabulary) and what came out: for each sequence the
top ``FINGERPRINT_K`` next-token ids with their logits at the last position, and the mean and standard
deviation of all its logits, rounded to ``DECIMALS`` decimals. A later run matches when it ran the same
thing and

* every recorded token's logit is within ``tolerance`` of the recorded value,
* no other token rises above the lowest recorded logit by more than ``tolerance``,
* the mean and standard deviation are within ``tolerance``,

so near-ties may swap order (as a different mesh's summation order can make them) while a changed
weight, store or model fails. The tolerance is stored in the file (see ``default_tolerance``)::

    {"format": "grokweights.fingerprint", "version": 1, "dtype": "bfloat16", "layers": [0, 1],
     "vocab_size": 512, "mesh": "data=2,model=4", "tolerance": 0.05, "tokens": [[...]],
     "top": [[[id, logit], ...]], "mean": [...], "std": [...]}
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_atomic
from ..checkpoint.files import read_json
from ..errors import UsageError

__all__ = ["Fingerprint", "FINGERPRINT_K", "DECIMALS", "default_tolerance", "require_tolerance"]

FORMAT = "grokweights.fingerprint"
VERSION = 1
#: next tokens recorded per sequence.
FINGERPRINT_K = 8
#: decimals kept of every recorded value.
DECIMALS = 4


def default_tolerance(dtype: str, logits: np.ndarray) -> float:
    """Absolute tolerance for comparing runs: a share of the logits' scale (2% in bfloat16, 0.01% in float32)."""
    scale = max(1.0, float(np.max(np.abs(logits))))
    return round((0.02 if dtype == "bfloat16" else 1e-4) * scale, 6)


@dataclass(frozen=True)
class Fingerprint:
    """What was run, and a compact summary of the logits it gave."""

    tokens: tuple[tuple[int, ...], ...]
    layers: tuple[int, ...]
    dtype: str
    vocab_size: int
    top: tuple[tuple[tuple[int, float], ...], ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tolerance: float
    mesh: str = ""

    @classmethod
    def of(cls, logits: np.ndarray, tokens: np.ndarray, *, layers: tuple[int, ...], dtype: str, mesh: str = "",
           tolerance: float | None = None) -> Fingerprint:
        """The fingerprint of ``logits`` [B, T, V] computed from ``tokens`` [B, T]."""
        if tolerance is not None:
            tolerance = require_tolerance(tolerance)
        last = logits[:, -1, :]
        order = np.argsort(-last, axis=-1, kind="stable")[:, :FINGERPRINT_K]
        top = tuple(tuple((int(i), round(float(row[i]), DECIMALS)) for i in ids)
                    for row, ids in zip(last, order, strict=True))
        return cls(
            tokens=tuple(tuple(int(t) for t in row) for row in tokens), layers=tuple(layers), dtype=dtype,
            vocab_size=int(logits.shape[-1]), top=top,
            mean=tuple(round(float(m), DECIMALS) for m in logits.mean(axis=(1, 2))),
            std=tuple(round(float(s), DECIMALS) for s in logits.std(axis=(1, 2))),
            tolerance=float(tolerance) if tolerance is not None else default_tolerance(dtype, last), mesh=mesh)

    def check(self, logits: np.ndarray, tokens: np.ndarray, *, layers: tuple[int, ...], dtype: str) -> list[str]:
        """Every way a new run (``logits`` [B, T, V] from ``tokens``) fails to match; empty when it matches."""
        other = Fingerprint.of(logits, tokens, layers=layers, dtype=dtype, tolerance=self.tolerance)
        for name in ("tokens", "layers", "dtype", "vocab_size"):
            if getattr(self, name) != getattr(other, name):
                return [f"the fingerprint is for {name} {_short(getattr(self, name))}, this run has "
                        f"{_short(getattr(other, name))}"]
        tol, out = self.tolerance, []
        for b, want in enumerate(self.top):
            last = logits[b, -1, :]
            for token, value in want:
                if not abs(float(last[token]) - value) <= tol:  # NaN never matches
                    out.append(f"sequence {b}: token {token} logit {value} is now {float(last[token]):.4f}")
            floor, recorded = min(v for _, v in want), {token for token, _ in want}
            risen = [int(t) for t in np.flatnonzero(~(last <= floor + tol)) if int(t) not in recorded]
            out += [f"sequence {b}: token {t} rose to {float(last[t]):.4f} (the recorded top ends at {floor})"
                    for t in risen[:3]]
        for name in ("mean", "std"):
            for b, (want_v, got_v) in enumerate(zip(getattr(self, name), getattr(other, name), strict=True)):
                if not abs(want_v - got_v) <= tol:
                    out.append(f"sequence {b}: logits {name} {want_v} is now {got_v}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "dtype": self.dtype, "layers": list(self.layers),
                "vocab_size": self.vocab_size, "mesh": self.mesh, "tolerance": self.tolerance,
                "tokens": [list(r) for r in self.tokens], "top": [[list(p) for p in r] for r in self.top],
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "fingerprint") -> Fingerprint:
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise UsageError(f"{source}: not a grokweights fingerprint (version {VERSION}); write one with "
                             "`grokweights smoke --save-expect FILE`", path=source, expected=FORMAT,
                             actual=data.get("format") if isinstance(data, dict) else type(data).__name__)
        try:
            fingerprint = cls(
                tokens=tuple(tuple(int(t) for t in r) for r in data["tokens"]),
                layers=tuple(int(i) for i in data["layers"]), dtype=str(data["dtype"]),
                vocab_size=int(data["vocab_size"]),
                top=tuple(tuple((int(i), float(v)) for i, v in r) for r in data["top"]),
                mean=tuple(float(m) for m in data["mean"]), std=tuple(float(s) for s in data["std"]),
                tolerance=float(data["tolerance"]), mesh=str(data.get("mesh", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{source}: malformed fingerprint ({exc!r})", path=source) from None
        fingerprint._require_finite(source)
        return fingerprint

    def _require_finite(self, source: str) -> None:
        """Refuse a fingerprint whose tolerance or recorded values are not finite numbers (NaN matches nothing
        and would compare as a pass)."""
        require_tolerance(self.tolerance, where=f"{source}: tolerance")
        values = {"top": [v for row in self.top for _, v in row], "mean": self.mean, "std": self.std}
        for name, found in values.items():
            if not all(math.isfinite(v) for v in found):
                raise UsageError(f"{source}: {name} holds a value that is not a finite number; write the fingerprint "
                                 "again with `grokweights smoke --save-expect FILE`", path=source,
                                 expected="finite numbers", actual=name)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fingerprint as JSON, atomically (temporary name, then rename)."""
        fields = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in self.to_dict().items())
        return write_atomic(path, "{\n" + fields + "\n}\n")  # one line per field: short diffs in version control

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Fingerprint:
        """Read a fingerprint file, naming the file in any error."""
        fix = "create it with `grokweights smoke --save-expect FILE`"
        if not os.path.lexists(path):
            raise UsageError(f"{path}: fingerprint file not found; {fix}", path=path, expected="a fingerprint file")
        data = read_json(path, what="fingerprint file", fix=fix, error=UsageError)  # regular file, bounded
        return cls.from_dict(data, source=os.fspath(path))


def require_tolerance(value: Any, *, where: str = "tolerance") -> float:
    """``value`` as a finite float >= 0 (an absolute logit tolerance).

    Raises:
        UsageError: NaN, infinite, negative or not a number (NaN would make every comparison pass).
    """
    try:
        tol = float(value)
    except (TypeError, ValueError):
        tol = float("nan")
    if not (math.isfinite(tol) and tol >= 0):
        raise UsageError(f"{where} must be a finite number >= 0, got {str(value)[:40]}", expected=">= 0, finite",
                         actual=str(value)[:40])
    return tol


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
