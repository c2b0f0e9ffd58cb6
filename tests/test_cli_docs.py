"""The CLI's pages document every option of every command, and no option that is gone.

Click's parameters are walked from the command group; each command's options are the
first column of its table in ``docs/cli/*.md``, the table whose header cell names the
command (``| `chatkit-mongo init` | default | |``); the connection options are the
first column of the table headed ``connection option`` on the index page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import click
import pytest

from chatkit_mongo.apps.cli import cli

from .cli_support import DOCS_CLI, command_names

_NAME: Final = re.compile(r"`(-{1,2}[A-Za-z][\w-]*|[A-Z][A-Z_]*)`")
"""An option (``--dry-run``, ``-d``) or an argument (``FILE``) written as code."""
_HELP: Final = frozenset({"--help", "-h"})
"""Documented once, on the index page, for every command."""


def documented(table: str) -> set[str]:
    """The names in the first column of a table's rows (its header and rule excluded)."""
    names: set[str] = set()
    for row in table.splitlines()[2:]:
        names.update(_NAME.findall(row.split("|")[1]))
    return names


def table_headed(header: str) -> str:
    """The one table of the CLI's pages whose first header cell is ``header``."""
    found = []
    for page in sorted(DOCS_CLI.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines[:-1]):
            if line.startswith(f"| {header} |") and lines[number + 1].startswith("| --- |"):
                end = next(
                    (n for n in range(number, len(lines)) if not lines[n].startswith("|")),
                    len(lines),
                )
                found.append("\n".join(lines[number:end]))
    assert len(found) == 1, f"{len(found)} tables headed {header!r} in {DOCS_CLI}"
    return found[0]


def declared(params: list[click.Parameter]) -> set[str]:
    """What click knows a command by: every spelling of each option, each argument's name."""
    names: set[str] = set()
    for param in params:
        if isinstance(param, click.Option):
            names.update(param.opts, param.secondary_opts)
        elif isinstance(param, click.Argument):
            names.add(param.human_readable_name)
    return names - _HELP


CONNECTION: Final = declared(cli.params)


def test_the_connection_options_are_documented_once_for_all() -> None:
    assert documented(table_headed("connection option")) == CONNECTION
    assert "`--help` (or `-h`)" in (DOCS_CLI / "index.md").read_text()


@pytest.mark.parametrize("command", command_names())
def test_every_option_of_the_command_is_documented_and_none_that_is_gone(command: str) -> None:
    found = cli.get_command(click.Context(cli), command)
    assert found is not None
    own = declared(found.params) - CONNECTION
    assert declared(found.params) >= CONNECTION, "every command takes the connection options"
    assert documented(table_headed(f"`chatkit-mongo {command}`")) == own


def test_every_command_is_listed_on_the_index_page() -> None:
    rows = (DOCS_CLI / "index.md").read_text().splitlines()
    linking = [row.split("|")[1] for row in rows if row.startswith("| `") and " | [" in row]
    named = {name for cell in linking for name in re.findall(r"`([a-z]+)`", cell)}
    assert named == set(command_names())


def test_the_pages_are_the_ones_the_index_links_to() -> None:
    linked = set(re.findall(r"\]\(([a-z-]+\.md)\)", (DOCS_CLI / "index.md").read_text()))
    assert linked == {page.name for page in DOCS_CLI.glob("*.md")} - {"index.md"}
    assert all((DOCS_CLI / Path(name)).is_file() for name in linked)
