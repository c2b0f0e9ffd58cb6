"""The CLI's pages document every option of every command, and no option that is gone.

Click's parameters are walked from the command group; each command's options are the
first column of the table in its section (``## `chatkit-mongo NAME```) of
``docs/cli/*.md``, the connection options that of "Connection options" in the index.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import click
import pytest

from chatkit_mongo.apps.cli import cli

from .cli_support import DOCS_CLI, command_names, markdown_section

_NAME: Final = re.compile(r"`(-{1,2}[A-Za-z][\w-]*|[A-Z][A-Z_]*)`")
"""An option (``--dry-run``, ``-d``) or an argument (``FILE``) written as code."""
_HELP: Final = frozenset({"--help", "-h"})
"""Documented once, on the index page, for every command."""


def documented(section: str) -> set[str]:
    """The names in the first column of the section's tables (header rows excluded)."""
    names: set[str] = set()
    for row in section.splitlines():
        cells = row.split("|")
        if row.startswith("| `") and len(cells) > 2:
            names.update(_NAME.findall(cells[1]))
    return names


def declared(params: list[click.Parameter]) -> set[str]:
    """What click knows a command by: every spelling of each option, each argument's name."""
    names: set[str] = set()
    for param in params:
        if isinstance(param, click.Option):
            names.update(param.opts, param.secondary_opts)
        elif isinstance(param, click.Argument):
            names.add(param.human_readable_name)
    return names - _HELP


def section_of(command: str) -> str:
    heading = f"## `chatkit-mongo {command}`"
    pages = [
        page for page in sorted(DOCS_CLI.glob("*.md")) if heading in page.read_text().splitlines()
    ]
    assert len(pages) == 1, f"{heading} is on {len(pages)} pages of {DOCS_CLI}"
    return markdown_section(pages[0], heading)


CONNECTION: Final = declared(cli.params)


def test_the_connection_options_are_documented_once_for_all() -> None:
    assert documented(markdown_section(DOCS_CLI / "index.md", "## Connection options")) == (
        CONNECTION
    )
    assert "`--help` (or `-h`)" in (DOCS_CLI / "index.md").read_text()


@pytest.mark.parametrize("command", command_names())
def test_every_option_of_the_command_is_documented_and_none_that_is_gone(command: str) -> None:
    found = cli.get_command(click.Context(cli), command)
    assert found is not None
    own = declared(found.params) - CONNECTION
    assert declared(found.params) >= CONNECTION, "every command takes the connection options"
    assert documented(section_of(command)) == own


def test_every_command_is_listed_on_the_index_page() -> None:
    rows = (DOCS_CLI / "index.md").read_text().splitlines()
    named = {row.split("`")[1] for row in rows if row.startswith("| `") and " | [" in row}
    assert named == set(command_names())


def test_the_pages_are_the_ones_the_index_links_to() -> None:
    linked = set(re.findall(r"\]\(([a-z]+\.md)\)", (DOCS_CLI / "index.md").read_text()))
    assert linked == {page.name for page in DOCS_CLI.glob("*.md")} - {"index.md"}
    assert all((DOCS_CLI / Path(name)).is_file() for name in linked)
