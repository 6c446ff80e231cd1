"""Resharded stores on tensorstore (the only package that imports it): write, index, read.

:mod:`.specs` (spec dicts, pure), :mod:`.kv` (opening arrays and key-value stores), :mod:`.writer`
(streaming a plan's arrays out of memory-mapped shards), :mod:`.reshard` (``reshard``: plan, check,
write, index), :mod:`.index` (``Store``: a finished store seen from Python).
"""

from __future__ import annotations

from .index import INDEX_FORMAT, Store, read_index
from .reshard import ReshardReport, reshard

__all__ = ["reshard", "ReshardReport", "Store", "read_index", "INDEX_FORMAT"]
