"""Device meshes and partition rules, as plain data (no jax here).

A :class:`MeshSpec` names the axes of a device mesh and their sizes (``data=2,model=4``). A
:class:`RuleSet` maps every parameter, by its key ``module/path/param``, to a partition spec over those
axis names: one entry per leading dimension of the tensor, each ``None`` (replicated), an axis name, or a
tuple of axis names (the dimension is split over their product). The first rule whose pattern matches
the whole key wins.

Two rule sets ship:

* ``grok1``: the release's own rules (``embeddings`` over ``("data", "model")``, the MoE and attention
  weights over ``data`` x ``model``, norms replicated, the router over ``data``);
* ``expert``: expert parallelism: the MoE weights' expert axis over ``expert`` and their hidden axis over
  ``model``, attention weights over ``model``, everything else replicated.

A user rules file is JSON::

    {"name": "mine", "rules": [{"pattern": "transformer/decoder_layer_\\\\d+/moe/linear(_v)?/w",
                                "spec": [null, "data", "model"]}, ...]}
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint.files import read_json
from ..errors import MeshError
from .patterns import check_pattern

__all__ = ["MAX_DEVICES", "MeshSpec", "Rule", "RuleSet", "GROK1_RULES", "EXPERT_RULES", "BUILTIN_RULES", "load_rules",
           "spec_to_json", "spec_from_json", "shard_factors", "as_mesh_spec", "default_mesh", "complete_mesh",
           "axis_names"]

Entry = None | str | tuple[str, ...]
Spec = tuple[Entry, ...]

_AXIS_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: the most devices a mesh (and a machine) may have, and the most axes: far beyond any machine, small enough
#: that nothing sized by them (device lists, factorisations) can exhaust memory.
MAX_DEVICES = 1 << 20
MAX_AXES = 16


@dataclass(frozen=True)
class MeshSpec:
    """Named mesh axes and their sizes, in mesh order (the last axis varies fastest over devices)."""

    axes: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if not self.axes:
            raise MeshError("a mesh needs at least one axis, e.g. 'data=1,model=8'")
        if len(self.axes) > MAX_AXES:
            raise MeshError(f"mesh of {len(self.axes)} axes (at most {MAX_AXES}); use fewer axes",
                            actual=len(self.axes))
        seen = set()
        for name, size in self.axes:
            if not isinstance(name, str) or not _AXIS_RE.fullmatch(name):
                raise MeshError(f"mesh axis name {name!r} is not an identifier", actual=name)
            if name in seen:
                raise MeshError(f"mesh axis {name!r} appears twice", actual=name)
            if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_DEVICES:
                shown = repr(size)[:30]
                raise MeshError(f"mesh axis {name!r} must have a positive integer size of at most {MAX_DEVICES} "
                                f"devices, got {shown}; give the mesh the machine has, e.g. 'data=1,model=8'",
                                expected=f"1..{MAX_DEVICES}", actual=size)
            seen.add(name)
        if math.prod(self.shape) > MAX_DEVICES:
            raise MeshError(f"mesh {self} has {math.prod(self.shape)} devices (at most {MAX_DEVICES}); give the "
                            "mesh the machine has, e.g. 'data=1,model=8'", expected=f"<= {MAX_DEVICES}",
                            actual=math.prod(self.shape))

    @classmethod
    def parse(cls, text: str) -> MeshSpec:
        """Parse ``"data=2,model=4"`` (also ``"expert=8,model=1"``)."""
        axes = []
        for part in text.replace(" ", "").split(","):
            match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]{0,63})=(\d{1,30})", part)
            if not match:
                raise MeshError(f"bad mesh {text[:80]!r}: expected NAME=SIZE pairs such as 'data=2,model=4'",
                                expected="NAME=SIZE,...", actual=text)
            axes.append((match.group(1), int(match.group(2))))
        return cls(tuple(axes))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(size for _, size in self.axes)

    @property
    def size(self) -> int:
        """Number of devices."""
        return math.prod(self.shape)

    def axis_size(self, name: str) -> int:
        return dict(self.axes)[name]

    def coords(self, device: int) -> dict[str, int]:
        """The position of device ``device`` (row-major over the mesh) on every axis."""
        out = {}
        for name, size in reversed(self.axes):
            out[name] = device % size
            device //= size
        return {name: out[name] for name in self.names}

    def __str__(self) -> str:
        return ",".join(f"{name}={size}" for name, size in self.axes)

    def to_dict(self) -> dict[str, int]:
        return dict(self.axes)

    @classmethod
    def from_dict(cls, data: Any) -> MeshSpec:
        if not isinstance(data, dict):
            raise MeshError(f"a mesh must be a JSON object of axis sizes, found {type(data).__name__}")
        return cls(tuple((str(k), v) for k, v in data.items()))


def as_mesh_spec(mesh: MeshSpec | str) -> MeshSpec:
    """A :class:`MeshSpec` from itself or its text (``"data=2,model=4"``): the one place text becomes a mesh."""
    if isinstance(mesh, MeshSpec):
        return mesh
    if isinstance(mesh, str):
        return MeshSpec.parse(mesh)
    raise MeshError(f"a mesh must be a MeshSpec or text such as 'data=1,model=8', got {type(mesh).__name__}",
                    expected="MeshSpec or NAME=SIZE text", actual=type(mesh).__name__)


def default_mesh(devices: int) -> MeshSpec:
    """The mesh used when none is given: every device on ``model`` (``data=1,model=N``), as the release."""
    return MeshSpec((("data", 1), ("model", devices)))


def spec_to_json(spec: Spec) -> list:
    """A partition spec as JSON (tuples of axis names become lists)."""
    return [list(e) if isinstance(e, tuple) else e for e in spec]


def spec_from_json(data: Any, *, where: str = "partition spec") -> Spec:
    """Parse a partition spec from JSON, checking every entry."""
    if not isinstance(data, (list, tuple)):
        raise MeshError(f"{where}: expected a list such as [null, \"data\", \"model\"], found {data!r}",
                        actual=data)
    out: list[Entry] = []
    for entry in data:
        if entry is None or isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, (list, tuple)) and all(isinstance(e, str) for e in entry):
            out.append(tuple(entry))
        else:
            raise MeshError(f"{where}: entry {entry!r} must be null, an axis name or a list of axis names",
                            actual=entry)
    return tuple(out)


def _axes_of(entry: Entry) -> tuple[str, ...]:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def shard_factors(key: str, shape: tuple[int, ...], spec: Spec, mesh: MeshSpec) -> tuple[int, ...]:
    """How many ways each dimension of ``shape`` is split by ``spec`` on ``mesh``.

    Raises:
        MeshError: the spec is longer than the tensor's rank, names an axis the mesh lacks, uses an axis
            twice, or splits a dimension by a size that does not divide it (naming parameter,
            dimension and sizes).
    """
    if len(spec) > len(shape):
        raise MeshError(f"{key}: partition spec {spec_to_json(spec)} has {len(spec)} entries but the tensor "
                        f"has {len(shape)} dimensions {list(shape)}", path=key, expected=len(shape),
                        actual=len(spec))
    used: set[str] = set()
    factors = []
    for dim, size in enumerate(shape):
        axes = _axes_of(spec[dim]) if dim < len(spec) else ()
        factor = 1
        for axis in axes:
            if axis not in mesh.names:
                raise MeshError(f"{key}: dimension {dim} is split over axis {axis!r}, which the mesh {mesh} lacks; "
                                f"add '{axis}=1' to the mesh or use other rules", path=key,
                                expected=list(mesh.names), actual=axis)
            if axis in used:
                raise MeshError(f"{key}: mesh axis {axis!r} is used twice in {spec_to_json(spec)}", path=key,
                                actual=axis)
            used.add(axis)
            factor *= mesh.axis_size(axis)
        if size % factor:
            raise MeshError(
                f"{key}: dimension {dim} of size {size} cannot be split {factor} ways over mesh axes "
                f"{' x '.join(axes)} ({mesh}); choose axis sizes that divide {size}",
                path=key, expected=f"a divisor of {size}", actual=factor)
        factors.append(factor)
    return tuple(factors)


@dataclass(frozen=True)
class Rule:
    """A regular expression over ``module/path/param`` (matched whole) and the partition spec it assigns."""

    pattern: str
    spec: Spec

    def __post_init__(self) -> None:
        check_pattern(self.pattern)

    def matches(self, key: str) -> bool:
        return re.fullmatch(self.pattern, key) is not None

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "spec": spec_to_json(self.spec)}


@dataclass(frozen=True)
class RuleSet:
    """An ordered list of partition rules with a name; the first matching rule wins."""

    name: str
    rules: tuple[Rule, ...]

    def spec_for(self, key: str) -> Spec:
        """The partition spec of ``key``; :class:`MeshError` if no rule matches it."""
        for rule in self.rules:
            if rule.matches(key):
                return rule.spec
        raise MeshError(f"{key}: no partition rule of rule set {self.name!r} matches this parameter; "
                        "add a rule for it", path=key)

    def resolve(self, keys: Iterable[str]) -> dict[str, Spec]:
        """The spec of every key; every key must be matched and every rule must match some key."""
        keys = list(keys)
        out = {key: self.spec_for(key) for key in keys}
        for rule in self.rules:
            if not any(rule.matches(key) for key in keys):
                raise MeshError(f"rule {rule.pattern!r} of rule set {self.name!r} matches no parameter of the "
                                "model; fix or remove it", path=rule.pattern, actual=rule.pattern)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rules": [r.to_dict() for r in self.rules]}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "rules") -> RuleSet:
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            raise MeshError(f"{source}: expected a JSON object with a 'rules' list of "
                            "{\"pattern\": ..., \"spec\": [...]} entries", path=source)
        rules = []
        for i, item in enumerate(data["rules"]):
            if not isinstance(item, dict) or not isinstance(item.get("pattern"), str) or "spec" not in item:
                raise MeshError(f"{source}: rule {i} must be an object with 'pattern' (string) and 'spec' (list)",
                                path=source, actual=item)
            try:
                rules.append(Rule(item["pattern"], spec_from_json(item["spec"], where=f"{source}: rule {i}")))
            except MeshError as exc:
                if exc.message.startswith(source):
                    raise
                raise MeshError(f"{source}: rule {i}: {exc.message}", path=source, actual=exc.actual) from None
        return cls(str(data.get("name", Path(source).stem)), tuple(rules))


_LAYER = r"transformer/decoder_layer_\d+"

#: the release's partition rules (each entry of the layout carries the same spec).
GROK1_RULES = RuleSet("grok1", (
    Rule("language_model/in_out_embed/embeddings", (None, ("data", "model"))),
    Rule("language_model/rms_norm/scale", (None,)),
    Rule(rf"{_LAYER}/moe/linear(_v)?/w", (None, "data", "model")),
    Rule(rf"{_LAYER}/moe/linear_1/w", (None, "model", "data")),
    Rule(rf"{_LAYER}/multi_head_attention/(query|key|value)/w", ("data", "model")),
    Rule(rf"{_LAYER}/multi_head_attention/linear/w", ("model", "data")),
    Rule(rf"{_LAYER}/rms_norm(_[123])?/scale", (None,)),
    Rule(rf"{_LAYER}/router/w", ("data",)),
))

#: expert parallelism: each device of the ``expert`` axis holds whole experts.
EXPERT_RULES = RuleSet("expert", (
    Rule("language_model/in_out_embed/embeddings", (None, "model")),
    Rule("language_model/rms_norm/scale", (None,)),
    Rule(rf"{_LAYER}/moe/linear(_v)?/w", ("expert", None, "model")),
    Rule(rf"{_LAYER}/moe/linear_1/w", ("expert", "model", None)),
    Rule(rf"{_LAYER}/multi_head_attention/(query|key|value)/w", (None, "model")),
    Rule(rf"{_LAYER}/multi_head_attention/linear/w", ("model", None)),
    Rule(rf"{_LAYER}/rms_norm(_[123])?/scale", (None,)),
    Rule(rf"{_LAYER}/router/w", (None,)),
))

BUILTIN_RULES = {"grok1": GROK1_RULES, "expert": EXPERT_RULES}


def load_rules(name_or_path: str | os.PathLike[str] | RuleSet) -> RuleSet:
    """A rule set: a :class:`RuleSet`, a built-in name (``grok1``, ``expert``) or a JSON rules file."""
    if isinstance(name_or_path, RuleSet):
        return name_or_path
    text = os.fspath(name_or_path)
    if text in BUILTIN_RULES:
        return BUILTIN_RULES[text]
    path = Path(text)
    if not path.exists():
        raise MeshError(f"no rules {text!r}: not a file and not a built-in rule set "
                        f"({', '.join(BUILTIN_RULES)})", path=text, expected=sorted(BUILTIN_RULES), actual=text)
    data = read_json(path, what="rules file", error=MeshError,
                     fix=f"fix it, or use a built-in rule set ({', '.join(BUILTIN_RULES)})")
    return RuleSet.from_dict(data, source=text)


def axis_names(rules: RuleSet, mesh: MeshSpec | None = None) -> tuple[str, ...]:
    """The mesh axes the rules name: those of ``mesh`` first (in its order), then the others as first named."""
    used: list[str] = []
    for rule in rules.rules:
        for entry in rule.spec:
            for name in _axes_of(entry):
                if name not in used:
                    used.append(name)
    names = mesh.names if mesh is not None else ()
    return tuple([n for n in names if n in used] + [n for n in used if n not in names])


def complete_mesh(mesh: MeshSpec, rules: RuleSet) -> MeshSpec:
    """``mesh`` with every axis the rules name but the mesh lacks added with size 1, in the rules' order.

    ``model=8`` under the release's rules (which also name ``data``) becomes ``data=1,model=8``.
    """
    order = {name: i for i, name in enumerate(axis_names(rules))}
    axes = list(mesh.axes)
    for name in [n for n in order if n not in mesh.names]:
        later = [i for i, (n, _) in enumerate(axes) if order.get(n, len(order)) > order[name]]
        axes.insert(later[0] if later else len(axes), (name, 1))
    return MeshSpec(tuple(axes))
