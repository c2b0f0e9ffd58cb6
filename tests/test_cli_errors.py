"""The exit-code policy, walked through every documented error case of every command.

The cases are the table "Documented errors" of ``docs/cli/index.md``: the page is the one
list, so a case documented there is run here, and a command without one fails the test.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click
import pytest
from click.testing import CliRunner

from chatkit_mongo.apps.cli import cli
from chatkit_mongo.encryption import DEFAULT_LOCAL_KEY_VARIABLE

from .cli_support import DOCS_CLI, command_names, markdown_section

_ROW: Final = re.compile(
    r"^\| `chatkit-mongo (?P<args>[^`]*)` \| (?P<code>[12]) \| `(?P<line>[^`]+)` \|$"
)
_ELIDED: Final = "..."
"""A documented line ending so is checked up to there (what follows depends on the system)."""


@dataclass(frozen=True)
class ErrorCase:
    args: tuple[str, ...]
    exit_code: int
    line: str

    def matches(self, printed: str) -> bool:
        if self.line.endswith(_ELIDED):
            return printed.startswith(self.line.removesuffix(_ELIDED))
        return printed == self.line


def documented_errors() -> list[ErrorCase]:
    table = markdown_section(DOCS_CLI / "index.md", "### Documented errors")
    cases = []
    for row in table.splitlines():
        if row.startswith("| `chatkit-mongo"):
            found = _ROW.match(row)
            assert found is not None, f"a row of the table that does not read: {row}"
            cases.append(
                ErrorCase(tuple(shlex.split(found["args"])), int(found["code"]), found["line"])
            )
    return cases


CASES: Final = documented_errors()


def test_every_command_has_documented_error_cases_of_both_kinds() -> None:
    covered = {case.args[0] for case in CASES if not case.args[0].startswith("-")}
    assert set(command_names()) <= covered
    assert {case.exit_code for case in CASES} == {1, 2}


@pytest.mark.parametrize("case", CASES, ids=[" ".join(case.args) for case in CASES])
def test_a_documented_error_exits_as_documented(
    case: ErrorCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("short.key").write_bytes(bytes(10))
    runner = CliRunner(env={"MONGODB_URI": None, DEFAULT_LOCAL_KEY_VARIABLE: None})
    result = runner.invoke(cli, list(case.args), prog_name="chatkit-mongo")

    assert isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == case.exit_code, result.output
    assert result.stdout == ""
    if case.exit_code == 1:  # a runtime error: exactly one line, no usage block
        assert result.stderr.endswith("\n"), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert case.matches(result.stderr.removesuffix("\n")), result.stderr
    else:  # a usage error: click's message among its usage lines
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, result.stderr
        assert case.matches(errors[0]), result.stderr
        assert "Traceback" not in result.stderr


def test_a_bad_value_from_the_environment_is_a_runtime_error_too() -> None:
    runner = CliRunner(env={"MONGODB_URI": None, DEFAULT_LOCAL_KEY_VARIABLE: "bm90IGEga2V5"})
    result = runner.invoke(cli, ["doctor", "--uri", "mongodb://db"])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: environment variable {DEFAULT_LOCAL_KEY_VARIABLE} holds 9 bytes; "
        "the local KMS provider needs exactly 96\n"
    )


def test_the_policy_holds_for_a_command_the_group_has_never_heard_of() -> None:
    """The policy is the group's: a new command follows it without doing anything."""
    group = click.group(cls=type(cli))(lambda: None)

    @group.command()
    @click.option("--count", type=click.IntRange(1, 3))
    def probe(count: int) -> None:
        """A command like any other."""

    refused = CliRunner().invoke(group, ["probe", "--count", "9"])
    missing_value = CliRunner().invoke(group, ["probe", "--count"])
    assert refused.exit_code == 1
    assert refused.stderr == "Error: Invalid value for '--count': 9 is not in the range 1<=x<=3.\n"
    assert missing_value.exit_code == 2
    assert missing_value.stderr.endswith("Error: Option '--count' requires an argument.\n")
