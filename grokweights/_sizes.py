"""Sizes and rates as people type them: the one parser every option of a size uses.

The rule (as GNU coreutils): ``K``, ``M``, ``G``, ``T`` and ``KiB``, ``MiB``, ``GiB``, ``TiB`` are powers of 1024;
``KB``, ``MB``, ``GB``, ``TB`` are powers of 1000; ``B`` or no unit is bytes. Case does not matter, spaces
between the number and the unit are allowed, and the number may have a fraction (``1.5G``). The result is a
whole, finite number of bytes below 2**63; zero is refused unless the caller gives it a meaning
(``zero_ok``: a rate of 0 is no limit).
"""

from __future__ import annotations

import math
import re

from .errors import UsageError

__all__ = ["parse_size", "SIZE_RULE"]

#: the rule, for error messages and docs.
SIZE_RULE = "bytes with an optional unit: K/M/G/T (KiB..TiB) are powers of 1024, KB/MB/GB/TB powers of 1000"

_UNITS = {"": 1, "B": 1,
          "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")
_LARGEST = (1 << 63) - 1


def parse_size(text: str | int | None, *, what: str = "size", zero_ok: bool = False) -> int | None:
    """``"512K"``, ``"16MiB"``, ``"5GB"``, ``"1.5T"``, ``"1000000"`` or an int -> bytes; None stays None.

    Raises:
        UsageError: not a size (``inf``, ``nan``, ``-1``, ``1e400``, an unknown unit), larger than 2**63 - 1
            bytes, or zero without ``zero_ok``; the message names ``what`` and the rule.
    """
    if text is None:
        return None
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise UsageError(f"bad {what} {text!r}; expected {SIZE_RULE}", expected="size", actual=text)
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.fullmatch(text)
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise UsageError(f"bad {what} {shown!r}; expected {SIZE_RULE}, e.g. 16M", expected="N[K|M|G|T]",
                             actual=shown)
        digits = match.group(1)
        if len(digits) > 40:  # more than any size (and than int() converts quickly)
            value = _LARGEST + 1
        elif "." in digits:
            value = math.floor(float(digits) * _UNITS[unit])
        else:
            value = int(digits) * _UNITS[unit]
    if value < 0 or value > _LARGEST:
        raise UsageError(f"bad {what} {str(text)[:40]!r}: not between 0 and {_LARGEST} bytes",
                         expected=f"<= {_LARGEST}", actual=str(text)[:40])
    if value == 0 and not zero_ok:
        raise UsageError(f"bad {what} {str(text)[:40]!r}: must be more than 0 bytes", expected="> 0", actual=text)
    return value
