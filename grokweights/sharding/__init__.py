"""Sharding as pure data: meshes, partition rules, the reshard plan and memory sizing (no jax, no tensorstore).

:mod:`.mesh` (MeshSpec, rule sets), :mod:`.plan` (``plan_reshard`` -> ReshardPlan), :mod:`.sizing`
(bytes per device of a forward pass: ``plan_memory``, the ``grokweights plan`` command).
"""

from __future__ import annotations

from .mesh import EXPERT_RULES, GROK1_RULES, MeshSpec, RuleSet, as_mesh_spec, complete_mesh, default_mesh, load_rules
from .plan import ArrayPlan, ReshardPlan, plan_reshard
from .sizing import MachinePlan, plan_memory

__all__ = ["MeshSpec", "RuleSet", "GROK1_RULES", "EXPERT_RULES", "load_rules", "as_mesh_spec", "default_mesh",
           "complete_mesh", "ArrayPlan", "ReshardPlan", "plan_reshard", "MachinePlan", "plan_memory"]
