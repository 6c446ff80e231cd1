"""The docs stay true to the code."""

import re

from grokweights.cli._docs import render

from .helpers import REPO


def test_cli_reference_matches_the_commands():
    assert (REPO / "docs" / "cli.md").read_text() == render(), "docs/cli.md is stale: run `make docs`"


def test_readme_shows_the_two_setup_commands_first():
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```\n(.*?)```", text, re.S).group(1)
    assert "make demo" in first_block and "make test" in first_block


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_docs_link_to_existing_files():
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", doc.read_text()):
            base = doc.parent
            assert (base / target).exists(), f"{doc.name} links to missing {target}"
