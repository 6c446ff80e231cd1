"""Devices and meshes at the JAX edge: the one place a mesh description becomes a ``jax.sharding.Mesh``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MeshError, UsageError
from ..sharding.mesh import MeshSpec, as_mesh_spec

__all__ = ["jax_mesh", "mesh_spec_of", "simulate_cpu_devices", "AXIS_TYPES"]

#: the mesh axis types ``jax_mesh`` builds.
AXIS_TYPES = ("auto", "explicit")


def jax_mesh(mesh: Any, *, devices: Sequence[Any] | None = None, axis_types: str = "auto") -> Any:
    """A ``jax.sharding.Mesh``: ``mesh`` itself when it is one, else a :class:`MeshSpec` (or its text) laid
    over ``devices`` (default: every device of the default backend), which must number exactly its size.
    ``axis_types`` is ``auto`` (the partitioner lays out intermediates) or ``explicit`` (sharding in types,
    what ``jax.make_mesh`` gives by default in current JAX); ``load``, ``forward`` and ``smoke`` take both.

    Raises:
        MeshError: the mesh's size differs from the number of devices.
        UsageError: an unknown ``axis_types``, or ``explicit`` on a JAX without axis types.
    """
    import jax

    if isinstance(mesh, jax.sharding.Mesh):
        return mesh
    spec = as_mesh_spec(mesh)
    devices = list(devices) if devices is not None else jax.devices()
    if spec.size != len(devices):
        raise MeshError(f"mesh {spec} needs {spec.size} devices but {len(devices)} are available; pass a mesh that "
                        f"fits them (e.g. mesh='data=1,model={len(devices)}' or a jax.sharding.Mesh)",
                        expected=spec.size, actual=len(devices))
    return jax.sharding.Mesh(np.array(devices).reshape(spec.shape), spec.names,
                             **_axis_types(axis_types, len(spec.names)))


def _axis_types(kind: str, count: int) -> dict[str, Any]:
    import jax

    if kind not in AXIS_TYPES:
        raise UsageError(f"axis types must be one of {', '.join(AXIS_TYPES)}, got {kind!r}", expected=AXIS_TYPES,
                         actual=kind)
    axis_type = getattr(jax.sharding, "AxisType", None)
    if kind == "auto":
        return {} if axis_type is None else {"axis_types": (axis_type.Auto,) * count}
    if axis_type is None:
        raise UsageError(f"explicit mesh axes need a newer JAX than {jax.__version__}; use axis types 'auto'",
                         actual=jax.__version__)
    return {"axis_types": (axis_type.Explicit,) * count}


def mesh_spec_of(mesh: Any) -> MeshSpec:
    """The :class:`MeshSpec` (axis names and sizes) of a ``jax.sharding.Mesh``."""
    return MeshSpec(tuple(zip(mesh.axis_names, mesh.devices.shape, strict=True)))


def simulate_cpu_devices(count: int) -> None:
    """Make the CPU backend present ``count`` devices (XLA's host platform device count).

    Must run before jax is first imported in this process; accelerators, where present, are unaffected.

    Raises:
        UsageError: jax is already imported (the setting would be ignored).
    """
    if count < 1:
        raise UsageError(f"device count must be positive, got {count}", actual=count)
    if "jax" in sys.modules:
        raise UsageError("cannot set the CPU device count: jax is already initialised in this process; set "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={count} before starting it")
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={count}"])
