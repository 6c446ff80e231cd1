"""The model configuration: a frozen dataclass with the upstream field names, and presets.

``ModelConfig`` is the one description of a Grok-1-shaped model that every stage shares: the layout
(which shards exist and their shapes), the reshard plan, and the forward pass. It round-trips through
JSON with the upstream field names.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["ModelConfig", "PRESETS", "preset", "ffn_size", "MAXIMA"]


#: upper bounds of the integer fields (far above Grok-1's 64 layers, 6144 wide, 8 experts, 131072 tokens), so a
#: config from a file can never ask the layout, a plan or the forward pass for absurd sizes.
MAXIMA: dict[str, int] = {
    "num_layers": 1024, "emb_size": 1 << 18, "num_q_heads": 4096, "num_kv_heads": 4096, "key_size": 4096,
    "num_experts": 4096, "num_selected_experts": 4096, "vocab_size": 1 << 22, "scale_blocks": 1 << 16,
}
#: the widening factor's upper bound (Grok-1: 8).
MAX_WIDENING_FACTOR = 64


def ffn_size(emb_size: int, widening_factor: float) -> int:
    """Hidden width of one expert: two thirds of ``widening_factor * emb_size``, rounded up to 8."""
    size = int(widening_factor * emb_size) * 2 // 3
    return size + (8 - size) % 8


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a Grok-1-shaped model (upstream field names).

    Attributes:
        num_layers: decoder layers.
        emb_size: model width.
        num_q_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention).
        key_size: width of one head.
        num_experts: experts per MoE layer.
        num_selected_experts: experts each token is routed to (top-k).
        widening_factor: expert hidden width is ``ffn_size(emb_size, widening_factor)``.
        vocab_size: token vocabulary.
        embedding_multiplier_scale: the embeddings are multiplied by this.
        output_multiplier_scale: the logits are multiplied by this.
        attn_output_multiplier: attention scores are multiplied by this.
        scale_blocks: row blocks of the int8 block scales where the release splits a weight's input
            axis (the attention output projection and ``moe/linear_1``); 1 block elsewhere.
    """

    num_layers: int
    emb_size: int
    num_q_heads: int
    num_kv_heads: int
    key_size: int
    num_experts: int
    num_selected_experts: int
    widening_factor: float
    vocab_size: int
    embedding_multiplier_scale: float = 1.0
    output_multiplier_scale: float = 1.0
    attn_output_multiplier: float = 1.0
    scale_blocks: int = 1

    def __post_init__(self) -> None:
        for name in ("num_layers", "emb_size", "num_q_heads", "num_kv_heads", "key_size", "num_experts",
                     "num_selected_experts", "vocab_size", "scale_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAXIMA[name]:
                shown = repr(value) if not isinstance(value, int) or value.bit_length() < 64 else "a huge number"
                raise ConfigError(f"model config field {name!r} must be a positive integer at most {MAXIMA[name]}, "
                                  f"got {shown[:40]}", expected=f"1..{MAXIMA[name]}", actual=value)
        for name in ("widening_factor", "embedding_multiplier_scale", "output_multiplier_scale",
                     "attn_output_multiplier"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"model config field {name!r} must be a finite number, got {str(value)[:40]}",
                                  expected="finite number", actual=value)
        if not 0 < self.widening_factor <= MAX_WIDENING_FACTOR or self.ffn_size < 8:
            raise ConfigError(f"model config field 'widening_factor' must be above 0 and at most "
                              f"{MAX_WIDENING_FACTOR}, and give an expert width of at least 8, got "
                              f"{self.widening_factor}", expected=f"(0, {MAX_WIDENING_FACTOR}]",
                              actual=self.widening_factor)
        if self.num_q_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_q_heads ({self.num_q_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})",
                expected=f"a multiple of {self.num_kv_heads}", actual=self.num_q_heads)
        if self.num_selected_experts > self.num_experts:
            raise ConfigError(
                f"num_selected_experts ({self.num_selected_experts}) exceeds num_experts ({self.num_experts})",
                expected=f"<= {self.num_experts}", actual=self.num_selected_experts)
        if self.key_size % 2:
            raise ConfigError(f"key_size must be even for rotary embeddings, got {self.key_size}",
                              expected="even", actual=self.key_size)
        for what, rows in (("num_q_heads * key_size", self.num_q_heads * self.key_size),
                           ("ffn_size", self.ffn_size)):
            if rows % self.scale_blocks:
                raise ConfigError(f"scale_blocks ({self.scale_blocks}) must divide {what} ({rows})",
                                  expected=f"a divisor of {rows}", actual=self.scale_blocks)

    @property
    def ffn_size(self) -> int:
        """Hidden width of one expert."""
        return ffn_size(self.emb_size, self.widening_factor)

    @property
    def q_size(self) -> int:
        """Width of all query heads together."""
        return self.num_q_heads * self.key_size

    @property
    def kv_size(self) -> int:
        """Width of all key (or value) heads together."""
        return self.num_kv_heads * self.key_size

    def with_layers(self, num_layers: int) -> ModelConfig:
        """The same model cut to its first ``num_layers`` layers, at full width."""
        if not 1 <= num_layers <= self.num_layers:
            raise ConfigError(f"cannot take {num_layers} layers of a {self.num_layers}-layer model",
                              expected=f"1..{self.num_layers}", actual=num_layers)
        return dataclasses.replace(self, num_layers=num_layers)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON data, upstream field names."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "model config") -> ModelConfig:
        """Build a config from JSON data, naming unknown or missing fields."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, found {type(data).__name__}",
                              path=source, expected="object", actual=type(data).__name__)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}",
                              path=source, expected=sorted(fields), actual=unknown)
        missing = [name for name, f in fields.items()
                   if name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}",
                              path=source, expected=missing, actual=sorted(data))
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc.message}", path=source, expected=exc.expected,
                              actual=exc.actual) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, *, source: str = "model config") -> ModelConfig:
        from .files import parse_json

        data = parse_json(text, source=source, what="model config", error=ConfigError,
                          fix="fix it, or use --preset NAME")
        return cls.from_dict(data, source=source)


#: Grok-1 as released: 314B parameters, 64 layers, 8 experts (top-2), 48 query / 8 kv heads.
GROK_1 = ModelConfig(
    num_layers=64,
    emb_size=6144,
    num_q_heads=48,
    num_kv_heads=8,
    key_size=128,
    num_experts=8,
    num_selected_experts=2,
    widening_factor=8,
    vocab_size=128 * 1024,
    embedding_multiplier_scale=78.38367176906169,
    output_multiplier_scale=0.5773502691896257,
    attn_output_multiplier=0.08838834764831845,
    scale_blocks=8,
)

#: the same structure (8 experts, top-2, grouped-query attention, 8 scale blocks) small enough for CPU tests.
TINY = ModelConfig(
    num_layers=2,
    emb_size=64,
    num_q_heads=4,
    num_kv_heads=2,
    key_size=16,
    num_experts=8,
    num_selected_experts=2,
    widening_factor=8,
    vocab_size=512,
    embedding_multiplier_scale=78.38367176906169,
    output_multiplier_scale=0.5773502691896257,
    attn_output_multiplier=0.25,
    scale_blocks=8,
)

PRESETS: dict[str, ModelConfig] = {"grok-1": GROK_1, "tiny": TINY}


def preset(name: str, *, layers: int | None = None) -> ModelConfig:
    """A preset by name (``grok-1`` or ``tiny``), optionally cut to its first ``layers`` layers."""
    try:
        config = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}",
                          expected=sorted(PRESETS), actual=name) from None
    return config.with_layers(layers) if layers is not None else config
