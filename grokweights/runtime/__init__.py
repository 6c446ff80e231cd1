"""Where the store meets the model: load parameters onto a mesh, smoke-test a forward pass, fingerprints.

:mod:`.devices` (the one mesh -> ``jax.sharding.Mesh``), :mod:`.sources` (store or checkpoint folder),
:mod:`.load` (``load``, ``open``), :mod:`.smoke` (``smoke``, ``smoke_plan``), :mod:`.fingerprint`.
"""

from __future__ import annotations

from .fingerprint import Fingerprint
from .load import LoadStats, load
from .smoke import SmokeReport, smoke, smoke_plan

__all__ = ["load", "LoadStats", "smoke", "smoke_plan", "SmokeReport", "Fingerprint"]
