"""Render ``docs/cli.md`` from the commands' own ``--help`` (``python -m grokweights.cli._docs``).

A test checks that the file in the repository equals this rendering, so the CLI reference cannot drift.
"""

from __future__ import annotations

import sys

import click

from . import main

_HEADER = """# Command-line reference

Generated from each command's `--help` by `python -m grokweights.cli._docs > docs/cli.md`
(`make docs`); a test fails when this file and the commands disagree.

Exit status: 0 success; 1 a check failed (verify, inspect, fetch, smoke) or a grokweights error;
2 usage error (bad option, unknown manifest, bad mesh). Errors are one line on stderr;
`GROKWEIGHTS_DEBUG=1` shows the traceback. `GROKWEIGHTS_DISABLE_PROGRESS=1` turns off progress bars
(they are also off when stderr is not a terminal).
"""


def _walk(command: click.Command, path: list[str], parent: click.Context | None):
    settings = {"terminal_width": 100, "max_content_width": 100, **command.context_settings}
    ctx = click.Context(command, info_name=path[-1], parent=parent, **settings)
    yield path, command.get_help(ctx)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, [*path, name], ctx)


def render() -> str:
    parts = [_HEADER]
    for path, text in _walk(main, ["grokweights"], None):
        level = "#" * min(len(path) + 1, 4)
        parts.append(f"{level} `{' '.join(path)}`\n\n```\n{text}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
