"""Resharded stores: zarr3 on disk (tensorstore is imported only here), written and read verified.

The face other packages use:

* :class:`StoreWrite` — one write of a store (lock, completed arrays, arrays shard by shard, the index last);
* :func:`reshard` / :func:`plan_for_checkpoint` — a checkpoint into a store;
* :class:`Store` — a finished store: its index, plan, and verified reads of any region (the fast path for
  uncompressed local arrays, tensorstore elsewhere);
* :func:`verify_store` — every array re-hashed against the index;
* :func:`source_identity`, :func:`read_index`, :func:`store_state`.

Modules: :mod:`.specs` (spec dicts, pure), :mod:`.chunks` (the chunk grid, pure), :mod:`.chunkfile` (one chunk
file, crc32c in hardware), :mod:`.fastread` (the verified fast read path), :mod:`.kv` (tensorstore at the edge),
:mod:`.writer` (one array), :mod:`.write` (one store write), :mod:`.index` (the index, read and written),
:mod:`.reader` (``Store``), :mod:`.reshard`, :mod:`.verify`, :mod:`.lock`.
"""

from __future__ import annotations

from .index import FINISHED, INDEX_FORMAT, UNFINISHED, read_index, store_state
from .reader import Store
from .reshard import ReshardReport, manifest_identity, plan_for_checkpoint, reshard, source_sha256
from .verify import ArrayCheck, StoreVerifyReport, verify_store
from .write import StoreWrite
from .writer import source_identity

__all__ = ["reshard", "ReshardReport", "plan_for_checkpoint", "Store", "StoreWrite", "read_index", "store_state",
           "verify_store", "StoreVerifyReport", "ArrayCheck", "source_identity", "manifest_identity",
           "source_sha256", "INDEX_FORMAT", "FINISHED", "UNFINISHED"]
