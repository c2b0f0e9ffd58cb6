"""One consistent CLI: the same connection options everywhere, no silent fallback to the
embedded backend, one-line errors for every bad value, ``import -``, no broken pipes,
and a ``--help`` that imports nothing heavy."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from chatkit_mongo import AsyncDatabaseLike
from chatkit_mongo._text import plural, shown
from chatkit_mongo.apps._params import Seconds, WholeNumber
from chatkit_mongo.apps.cli import _Duration, cli
from chatkit_mongo.apps.connection import Connection
from chatkit_mongo.encryption import DEFAULT_LOCAL_KEY_VARIABLE, LOCAL_KEY_BYTES, Encryption
from chatkit_mongo.schema import CollectionNames, collection_settings

from .cli_support import all_documents, encoded, invoke, run, seed
from .samples import BASE_TIME

_STOP: Final = "stopped at the opener"
_KEY_FILE: Final = Path(tempfile.mkdtemp(prefix="chatkit-mongo-cli-")) / "master.key"
_KEY_FILE.write_bytes(bytes(LOCAL_KEY_BYTES))
"""A master key for the command that cannot start without one (``migrate``)."""
COMMANDS: Final[dict[str, tuple[str, ...]]] = {
    "init": (),
    "doctor": (),
    "export": (),
    "import": ("-",),
    "purge": ("--owner", "a"),
    "serve": (),
    "bench": (),
    "shard": (),
    "migrate": ("--to", "plain"),
}
"""Every command that connects, with the arguments it needs besides the options."""
KEYED: Final[dict[str, tuple[str, ...]]] = {"migrate": ("--master-key-file", str(_KEY_FILE))}
"""The commands that also need a master key, with one."""


def _needs(command: str) -> list[str]:
    """What ``command`` needs besides the connection options, its master key included."""
    return [*COMMANDS[command], *KEYED.get(command, ())]


OPTIONS: Final = (
    ("--uri", "mongodb://db.example:27018"),
    ("--database", "other"),
    ("--timeout", "2.5"),
    ("--threads-collection", "t"),
    ("--items-collection", "i"),
    ("--attachments-collection", "a"),
    ("--bucket", "b"),
    ("--key-vault", "keys.vault"),
)
EXPECTED: Final = Connection(
    "mongodb://db.example:27018",
    "other",
    2.5,
    CollectionNames(threads="t", items="i", attachments="a", bucket="b"),
    opener=lambda connection: None,  # type: ignore[arg-type,return-value]  # not compared
    encryption=None,
    key_vault="keys.vault",
    key_vault_named=True,
)


def _stopping(seen: list[Connection]) -> Any:
    """An opener that records the connection it is asked for, then stops the command."""

    @asynccontextmanager
    async def opener(connection: Connection) -> AsyncIterator[AsyncDatabaseLike]:
        seen.append(connection)
        raise click.ClickException(_STOP)
        yield  # pragma: no cover  (makes this a generator)

    return opener


def _flat(options: tuple[tuple[str, str], ...]) -> list[str]:
    return [part for option in options for part in option]


def _connection_of(args: list[str]) -> Connection:
    seen: list[Connection] = []
    result = CliRunner().invoke(cli, args, obj=_stopping(seen), input="", env={"MONGODB_URI": None})
    assert result.exit_code == 1, result.output
    assert _STOP in result.output
    assert len(seen) == 1
    return seen[0]


def _same(found: Connection, command: str) -> bool:
    keep = ("uri", "database", "timeout", "collections", "key_vault")
    keyed = command in KEYED
    expected = Encryption.local(bytes(LOCAL_KEY_BYTES), key_vault_namespace=EXPECTED.key_vault)
    return found.encryption == (expected if keyed else EXPECTED.encryption) and all(
        getattr(found, name) == getattr(EXPECTED, name) for name in keep
    )


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["before", "after", "split"])
def test_every_command_takes_every_connection_option_before_or_after_its_name(
    command: str, where: str
) -> None:
    options = _flat(OPTIONS)
    half = _flat(OPTIONS[:3]), _flat(OPTIONS[3:])
    args = {
        "before": [*options, command, *_needs(command)],
        "after": [command, *_needs(command), *options],
        "split": [*half[0], command, *_needs(command), *half[1]],
    }[where]
    assert _same(_connection_of(args), command)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_environment_uri_yields_to_the_command_line(command: str) -> None:
    seen: list[Connection] = []
    args = [command, *_needs(command), "--uri", "mongodb://given"]
    env = {"MONGODB_URI": "mongodb://from-env"}
    CliRunner().invoke(cli, args, obj=_stopping(seen), input="", env=env)
    assert [connection.uri for connection in seen] == ["mongodb://given"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["before", "after"])
def test_every_command_reads_the_master_key_file_before_or_after_its_name(
    command: str, where: str, tmp_path: Path
) -> None:
    key = os.urandom(LOCAL_KEY_BYTES)
    path = tmp_path / "master.key"
    path.write_text(base64.b64encode(key).decode())
    options = ["--master-key-file", str(path), "--key-vault", "keys.vault"]
    args = [*options, command] if where == "before" else [command, *options]
    found = _connection_of([*args, *COMMANDS[command]])
    assert found.encryption == Encryption.local(key, key_vault_namespace="keys.vault")


def test_the_master_key_comes_from_the_environment_when_no_file_is_given() -> None:
    key = os.urandom(LOCAL_KEY_BYTES)
    seen: list[Connection] = []
    env = {"MONGODB_URI": "mongodb://x", DEFAULT_LOCAL_KEY_VARIABLE: base64.b64encode(key).decode()}
    CliRunner().invoke(cli, ["doctor"], obj=_stopping(seen), env=env)
    assert [connection.encryption for connection in seen] == [Encryption.local(key)]


def test_without_a_master_key_nothing_is_encrypted() -> None:
    seen: list[Connection] = []
    env = {"MONGODB_URI": "mongodb://x", DEFAULT_LOCAL_KEY_VARIABLE: None}
    CliRunner().invoke(cli, ["doctor"], obj=_stopping(seen), env=env)
    assert [connection.encryption for connection in seen] == [None]


@pytest.mark.parametrize("content", [b"", b"short", b"not base64 at all!" * 10])
def test_a_bad_master_key_file_is_one_line_naming_it(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    result = CliRunner().invoke(
        cli, ["doctor", "--uri", "mongodb://x", "--master-key-file", str(path)]
    )
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: ")
    assert "master key file" in result.stderr


def test_one_option_given_twice_with_different_values_is_refused() -> None:
    result = CliRunner().invoke(cli, ["-d", "one", "init", "-d", "two"])
    assert result.exit_code == 1
    assert (
        result.output == "Error: --database given twice with different values ('one' and 'two')\n"
    )


@pytest.mark.parametrize("command", ["serve", "bench"])
@pytest.mark.parametrize("where", ["before", "after", "environment"])
def test_no_command_falls_back_to_the_embedded_backend_when_a_uri_was_given(
    command: str, where: str, tmp_path: Path
) -> None:
    """Regression: ``--uri ... serve`` served the embedded backend, ``bench`` exited 0."""
    uri = "mongodb://127.0.0.1:9/?directConnection=true"
    options = ["--uri", uri, "--timeout", "0.2"]
    env: dict[str, str | None] = {"MONGODB_URI": None}
    args = {
        "before": [*options, command],
        "after": [command, *options],
        "environment": [command, "--timeout", "0.2"],
    }[where]
    if where == "environment":
        env["MONGODB_URI"] = uri
    if command == "bench":
        args += ["--out", str(tmp_path / "bench.json")]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1].startswith(
        "Error: cannot reach MongoDB within 0.2s: 127.0.0.1:9: "
    )
    assert "embedded" not in result.output
    assert not (tmp_path / "bench.json").exists()


def test_init_dry_run_works_offline_and_says_it_compared_nothing() -> None:
    result = CliRunner().invoke(cli, ["init", "--dry-run"], env={"MONGODB_URI": None})
    assert result.exit_code == 0
    assert result.stderr == "no URI given: the indexes the store needs, compared with nothing\n"
    assert result.stdout.startswith("chatkit_threads.owner_thread_unique {owner: 1, thread_id: 1}")


def _numeric_options() -> Iterator[tuple[str, str]]:
    """Every option of every command whose value is a number (or numbers): generated from
    the commands themselves, so a new option is covered the day it is added."""
    context = click.Context(cli)
    numeric = (click.types.IntParamType, click.types.FloatParamType, Seconds, WholeNumber)
    for name in cli.list_commands(context):
        command = cli.get_command(context, name)
        assert command is not None
        for param in command.params:
            if isinstance(param, click.Option) and (
                isinstance(param.type, (*numeric, _Duration)) or param.name == "sizes"
            ):
                yield name, param.opts[0]
    for param in cli.params:
        if isinstance(param, click.Option) and isinstance(param.type, numeric):
            yield "", param.opts[0]


NUMERIC_OPTIONS: Final = sorted(_numeric_options())
_DIGITS: Final = st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n)
_EDGES: Final = st.sampled_from(
    [
        "inf", "-inf", "nan", "NaN", "1e309", "-1e309", "1e-320", "0", "-0", "+0", "-1",
        "0.0", "0x10", "1_000", "\u0663", "\uff13", "", " ", "2**64", "18446744073709551616",
        "9223372036854775808", "4294967296", "65536", "1e3", "0s", "0d", "1.5", ",", "1,,2",
    ]
)  # fmt: skip
HOSTILE_NUMBERS: Final = st.one_of(
    _EDGES,
    _DIGITS,
    _DIGITS.map(lambda digits: digits + "d"),
    _DIGITS.map(lambda digits: "-" + digits),
    st.floats().map(repr),
    st.integers().map(str),
    st.text(max_size=12),
)


def test_the_numeric_options_are_all_found() -> None:
    names = {f"{command} {option}".strip() for command, option in NUMERIC_OPTIONS}
    assert {"--timeout", "purge --older-than", "serve --port", "serve --word-delay"} <= names
    assert {"bench --users", "bench --sizes", "bench --page-size", "init --timeout"} <= names


@settings(max_examples=300, deadline=None)
@given(where=st.sampled_from(NUMERIC_OPTIONS), value=HOSTILE_NUMBERS)
def test_every_numeric_edge_of_every_option_is_one_line_or_accepted(
    where: tuple[str, str], value: str
) -> None:
    """Regression (issue 12.10): a 5,000-digit ``--older-than``, ``--timeout inf``."""
    command, option = where
    args = [option, value] if not command else [command, *_needs(command), option, value]
    if command == "purge" and option == "--older-than":
        args = [command, option, value]
    seen: list[Connection] = []
    full = [*args, *([] if command else ["init"])]
    result = CliRunner().invoke(cli, full, obj=_stopping(seen), env={"MONGODB_URI": None})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    # Refused or accepted (the command went on to open the database), it exits 1 with one
    # line: a bad value is a runtime error, not a usage error (see the exit-code policy).
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: "), result.output
    if result.output != f"Error: {_STOP}\n":  # refused: naming the option, readably short
        error = result.output
        assert option in error or option.lstrip("-").replace("-", "_") in error, error
        assert len(error) < 300, error


def test_export_to_a_missing_directory_is_one_line_and_connects_to_nothing() -> None:
    seen: list[Connection] = []
    result = CliRunner().invoke(
        cli, ["export", "--out", "/missing-dir/x.jsonl"], obj=_stopping(seen)
    )
    assert result.exit_code == 1
    assert result.output == "Error: cannot write /missing-dir/x.jsonl: No such file or directory\n"
    assert seen == []


async def test_a_failed_export_leaves_no_file_behind(
    backend: str, database: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    result = await run(backend, database, "export", "--owner", "", "--out", str(out))
    assert result.exit_code == 1
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []


async def test_export_piped_into_import_dash_copies_everything(
    backend: str, database: Any, empty_database: Any
) -> None:
    await seed(database, "alice", ["thr_a", "thr_b"], BASE_TIME)
    exported = await run(backend, database, "export")
    assert exported.exit_code == 0

    imported = await asyncio.to_thread(
        invoke, backend, empty_database, "import", "-", stdin=exported.stdout
    )
    assert imported.exit_code == 0, imported.output
    assert "thread: 2 inserted" in imported.output
    assert encoded(await all_documents(empty_database)) == encoded(await all_documents(database))


def test_the_summary_words_agree_with_their_counts() -> None:
    assert [plural(n, "file") for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]
    assert plural(1, "index") == "1 index"
    assert plural(3, "index") == "3 indexes"
    assert shown("9" * 5000).endswith("(5000 characters)")
    assert len(shown("9" * 5000)) < 70


_PROBE: Final = """
import sys
from chatkit_mongo.apps.cli import main
HEAVY = ("chatkit.server", "agents", "starlette", "uvicorn", "matplotlib", "fastapi")
for args in {commands!r}:
    try:
        main(args)
    except SystemExit as exit:
        assert exit.code == 0, (args, exit.code)
    loaded = [name for name in HEAVY if name in sys.modules]
    print(" ".join(args), "->", ",".join(loaded) or "none", file=sys.stderr)
"""


def test_help_imports_no_heavy_module() -> None:
    """``--help`` of the group and of every command loads neither ChatKit's server, the
    agents SDK, Starlette, uvicorn nor matplotlib (a behaviour test, not a timer)."""
    commands = [["--help"], *([name, "--help"] for name in sorted(COMMANDS))]
    probe = _PROBE.format(commands=commands)
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    lines = done.stderr.splitlines()
    assert lines == [f"{' '.join(args)} -> none" for args in commands], done.stderr


@pytest.mark.parametrize("args", [["init", "--dry-run"], ["--help"]])
def test_a_closed_output_pipe_ends_quietly(args: list[str]) -> None:
    """Regression: ``create_indexes.py | head`` ended in a BrokenPipeError traceback."""
    script = "import sys; from chatkit_mongo.apps.cli import main; main(sys.argv[1:])"
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # the reader is gone before anything is written
    errors = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "Traceback" not in errors
    assert "BrokenPipeError" not in errors
    assert process.returncode in (0, 1)


def test_an_unreachable_server_is_one_line_with_host_and_cause() -> None:
    args = ["doctor", "--uri", "mongodb://127.0.0.1:9/?directConnection=true", "--timeout", "0.2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith("Error: cannot reach MongoDB within 0.2s: 127.0.0.1:9: ")
    assert "Topology Description" not in result.output
    assert "configured timeouts" not in result.output


def test_the_timeout_names_one_unit_everywhere() -> None:
    for command in COMMANDS:
        result = CliRunner().invoke(cli, [command, "--help"])
        assert "--timeout SECONDS" in result.output, command
        assert "--connect-timeout" not in result.output
        assert "--timeout-ms" not in result.output


def test_each_collection_name_has_its_option_derived_from_the_registry() -> None:
    """The registry of document kinds names the collection settings; each is a field of
    CollectionNames and has one option on every command, with its default and help.
    OPTIONS above must cover them all, so the generated matrix tests every one."""
    settings = collection_settings()
    assert settings == tuple(f.name for f in fields(CollectionNames))
    flags = {f"--{s}" if s == "bucket" else f"--{s}-collection": s for s in settings}
    assert set(flags) == {name for name, _ in OPTIONS} - {
        "--uri",
        "--database",
        "--timeout",
        "--key-vault",
    }
    for command in COMMANDS:
        shown_help = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
        for flag, setting in flags.items():
            default = getattr(CollectionNames(), setting)
            described = (
                "Name of the GridFS bucket of attachment bytes."
                if setting == "bucket"
                else f"Name of the {setting} collection."
            )
            assert f"{flag} TEXT {described} [default: {default}]" in shown_help, command
