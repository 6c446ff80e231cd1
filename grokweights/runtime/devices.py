"""Devices and meshes at the JAX edge: the one place a mesh description becomes a ``jax.sharding.Mesh``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MeshError, UsageError
from ..sharding.mesh import MeshSpec, as_mesh_spec

__all__ = ["jax_mesh", "mesh_spec_of", "simulate_cpu_devices"]


def jax_mesh(mesh: Any, *, devices: Sequence[Any] | None = None) -> Any:
    """A ``jax.sharding.Mesh``: ``mesh`` itself when it is one, else a :class:`MeshSpec` (or its text) laid
    over ``devices`` (default: every device of the default backend), which must number exactly its size.

    Raises:
        MeshError: the mesh's size differs from the number of devices.
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
    return jax.sharding.Mesh(np.array(devices).reshape(spec.shape), spec.names)


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
