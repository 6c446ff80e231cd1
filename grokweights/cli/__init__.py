"""The ``grokweights`` command: a thin click shell over the library.

Each stage's commands live in their own module and are imported only when used, so ``inspect`` and
``verify`` start without importing jax, tensorstore or libtorrent. Errors deriving from
``GrokWeightsError`` become one line on stderr and the error's exit code (``GROKWEIGHTS_DEBUG=1`` shows
the traceback); anything else propagates.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

import click

from .. import constants
from ..errors import GrokWeightsError

__all__ = ["main"]

#: command name -> "module:attribute", imported on first use.
COMMANDS = {
    "synth": "grokweights.cli.core:synth",
    "inspect": "grokweights.cli.core:inspect_command",
    "manifest": "grokweights.cli.core:manifest",
    "verify": "grokweights.cli.core:verify_command",
    "fetch": "grokweights.cli.torrent:fetch",
    "seed": "grokweights.cli.torrent:seed",
    "torrent": "grokweights.cli.torrent:torrent",
    "reshard": "grokweights.cli.reshard:reshard",
    "smoke": "grokweights.cli.smoke:smoke",
    "plan": "grokweights.cli.smoke:plan",
    "export": "grokweights.cli.export:export",
    "demo": "grokweights.cli.demo:demo",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, target in COMMANDS.items()
                if importlib.util.find_spec(target.split(":")[0]) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        if importlib.util.find_spec(module) is None:
            return None
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GrokWeightsError as exc:
            if constants.DEBUG:
                raise
            click.echo(f"grokweights: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="grokweights")
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
def main(verbose: int) -> None:
    """Fetch, verify, reshard and smoke-test the Grok-1 open weights."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
