"""Helpers shared by the CLI modules: output, size formatting, common options."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..checkpoint.config import ModelConfig, preset

__all__ = ["emit_json", "human_bytes", "table", "config_options", "resolve_config", "json_option", "quiet_option",
           "Gibibytes"]


class Gibibytes(click.ParamType):
    """A positive, finite number of GiB, at most ``most`` (click's FloatRange lets ``nan`` and ``inf`` through)."""

    name = "GIB"

    def __init__(self, most: float = 1 << 20) -> None:
        self.most = most

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of GiB", param, ctx)
        if not math.isfinite(number) or not 0 < number <= self.most:
            self.fail(f"{value!r} is not a finite number of GiB above 0 and at most {self.most:,.0f}", param, ctx)
        return number


def emit_json(data: Any) -> None:
    """Write one JSON document to stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Write a machine-readable JSON report to stdout.")(f)


def quiet_option(f: Callable) -> Callable:
    return click.option("-q", "--quiet", is_flag=True, help="No progress bar.")(f)


def config_options(f: Callable) -> Callable:
    f = click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Model config as a JSON file with the config's field names.")(f)
    f = click.option("--preset", "preset_name", type=click.Choice(["grok-1", "tiny"]),
                     help="Model config preset.")(f)
    return f


def resolve_config(preset_name: str | None, config_file: Path | None, *, layers: int | None = None
                   ) -> ModelConfig | None:
    """The config named by --preset or --config (mutually exclusive), or None."""
    if preset_name and config_file:
        raise click.UsageError("--preset and --config are mutually exclusive")
    if config_file:
        from ..checkpoint.files import read_json
        from ..errors import ConfigError

        data = read_json(config_file, what="model config", error=ConfigError, fix="fix it, or use --preset NAME")
        config = ModelConfig.from_dict(data, source=str(config_file))
        return config.with_layers(layers) if layers else config
    if preset_name:
        return preset(preset_name, layers=layers)
    return None
