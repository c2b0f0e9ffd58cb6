"""``chatkit-mongo`` init and doctor on every backend; connection errors; options."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import click
import pytest
from click.testing import CliRunner
from pymongo import IndexModel

from chatkit_mongo.apps.cli import _Duration, _progress, cli
from chatkit_mongo.operations.explain import summarise
from chatkit_mongo.operations.indexes import plan_indexes
from chatkit_mongo.schema import INDEXES, Field

from . import capabilities
from .cli_support import run, seed
from .conftest import NAMES, is_server
from .samples import BASE_TIME

COMMANDS = ("init", "doctor", "export", "import", "purge", "shard")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert f"Usage: cli {command}" in result.output


@pytest.mark.parametrize("command", ["init", "doctor", "export", "purge --owner a"])
def test_without_a_uri_commands_exit_non_zero_and_say_why(command: str) -> None:
    result = CliRunner().invoke(cli, command.split(), env={"MONGODB_URI": None})
    assert result.exit_code == 1
    assert "no MongoDB URI: pass --uri or set MONGODB_URI" in result.output


def test_a_bad_uri_is_reported() -> None:
    result = CliRunner().invoke(cli, ["--uri", "postgres://nope", "doctor"])
    assert result.exit_code == 1
    assert "bad MongoDB URI" in result.output


def test_an_unreachable_server_is_reported() -> None:
    args = ["--uri", "mongodb://127.0.0.1:9/?directConnection=true", "--timeout", "0.2", "init"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "cannot reach MongoDB within 0.2s" in result.output


@pytest.mark.parametrize("args", [["purge"], ["purge", "--owner", "a", "--older-than", "1d"]])
def test_purge_needs_exactly_one_selection(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["--uri", "mongodb://localhost", *args])
    assert result.exit_code == 1
    assert result.output == "Error: give exactly one of --owner and --older-than\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("3600s", timedelta(seconds=3600)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert _Duration().convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["30", "d", "-1d", "1.5h", "30 days"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(click.BadParameter, match="is not a duration like 30d"):
        _Duration().convert(text, None, None)


@pytest.mark.parametrize("text", ["0s", "0d", "000w"])
def test_a_zero_duration_is_called_zero_not_malformed(text: str) -> None:
    with pytest.raises(
        click.BadParameter, match="is no time at all; give a duration longer than zero"
    ):
        _Duration().convert(text, None, None)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_only() -> None:
    terminal = _Terminal()
    with _progress(4, "working", terminal) as advance:
        assert advance is not None
        advance(4)
    assert "working" in terminal.getvalue()
    assert "100%" in terminal.getvalue()
    with _progress(4, "working", io.StringIO()) as advance:
        assert advance is None


async def test_init_dry_run_creates_nothing_then_init_creates_all(
    backend: str, database: Any
) -> None:
    dry = await run(backend, database, "init", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.count(": missing") == len(INDEXES)
    plan = await plan_indexes(database, NAMES)
    assert {status.state for status in plan} == {"missing"}

    created = await run(backend, database, "init")
    again = await run(backend, database, "init")

    assert created.output.count(": created") == len(INDEXES)
    assert again.exit_code == 0
    assert again.output.count(": present") == len(INDEXES)
    assert "created" not in again.output


async def test_init_names_a_conflicting_index_and_exits_non_zero(
    backend: str, database: Any
) -> None:
    spec = INDEXES[0]
    await database[NAMES.threads].create_indexes([IndexModel([("x", 1)], name=spec.name)])

    dry = await run(backend, database, "init", "--dry-run")
    result = await run(backend, database, "init")

    assert dry.exit_code == 1
    assert f"{NAMES.threads}.{spec.name} " in dry.output
    assert f"unique: conflict (an index named {spec.name} has keys" in dry.output
    assert result.exit_code == 1
    assert "existing indexes clash" in result.output


@pytest.mark.needs("dropIndexes")
async def test_doctor_fails_while_indexes_are_missing(backend: str, database: Any) -> None:
    await seed(database, "alice", ["thr_1"], BASE_TIME)
    await database[NAMES.items].drop_indexes()

    result = await run(backend, database, "doctor")

    assert result.exit_code == 1
    assert "owner_thread_sort {owner: 1, thread_id: 1, sk: 1}: missing" in result.output
    assert (
        "next: run `chatkit-mongo init` (same connection options) to create the missing indexes"
    ) in result.output
    assert "Error: 2 checks failed" in result.output


async def test_doctor_with_retention_expects_the_ttl_indexes(backend: str, database: Any) -> None:
    await seed(database, "alice", ["thr_1"], BASE_TIME)  # a store without retention

    missing = await run(backend, database, "doctor", "--retention")
    assert missing.exit_code == 1
    assert "chatkit_items.expires_at_ttl {expires_at: 1} expireAfterSeconds=0: missing" in (
        missing.output
    )
    assert "next: run `chatkit-mongo init --retention`" in missing.output

    assert (await run(backend, database, "init", "--retention")).exit_code == 0
    present = await run(backend, database, "doctor", "--retention")
    assert present.exit_code == 0, present.output
    assert "chatkit_items.expires_at_ttl {expires_at: 1} expireAfterSeconds=0: present" in (
        present.output
    )
    assert "expires_at" not in (await run(backend, database, "doctor")).output


async def test_doctor_passes_once_initialised(backend: str, database: Any) -> None:
    await seed(database, "alice", ["thr_1"], BASE_TIME)

    result = await run(backend, database, "doctor")

    assert result.exit_code == 0, result.output
    assert "server version" in result.output
    assert "load_thread_items page" in result.output
    lines = result.output.splitlines()
    if not is_server(backend):  # the doubles answer neither hello nor explain: said, not faked
        topology = [line for line in lines if line.startswith("unavailable topology")]
        assert len(topology) == 1
        assert topology[0].startswith("unavailable topology: the server does not run 'hello' (")
        assert topology[0].endswith("); topology and transactions are not checked")
    if not (is_server(backend) and capabilities.has("explain")):
        plans = [line for line in lines if "query plans" in line]
        assert len(plans) == 1
        assert plans[0].startswith("unavailable query plans: the server does not run 'explain' (")
        assert plans[0].endswith(
            "); the query-plan checks are skipped (load_thread, load_threads page, "
            "load_thread_items page, load_thread_items page after an item, page anchor, "
            "load_item, load_attachment)"
        )
    assert "next:" not in result.output


_IXSCAN = {"stage": "IXSCAN", "indexName": "owner_thread_sort"}


@pytest.mark.parametrize(
    ("plan", "stages"),
    [
        ({"stage": "LIMIT", "inputStage": {"stage": "FETCH", "inputStage": _IXSCAN}}, 3),
        ({"queryPlan": {"stage": "PROJECTION_SIMPLE", "inputStage": _IXSCAN}}, 2),
        (
            {
                "stage": "SINGLE_SHARD",
                "shards": [{"winningPlan": {"stage": "FETCH", "inputStage": _IXSCAN}}],
            },
            3,
        ),
    ],
)
def test_explain_summary_finds_the_index_scan_however_nested(
    plan: dict[str, Any], stages: int
) -> None:
    summary = summarise(
        {
            "queryPlanner": {"winningPlan": plan},
            "executionStats": {"totalKeysExamined": 21, "totalDocsExamined": 21, "nReturned": 21},
        }
    )
    assert summary.uses_index
    assert not summary.sorts_in_memory
    assert len(summary.stages) == stages
    assert "21 keys and 21 documents examined for 21 returned" in summary.describe()
    assert summary.problems() == []


def test_explain_summary_flags_a_scan_and_an_in_memory_sort() -> None:
    plan = {
        "stage": "SORT",
        "sortPattern": {Field.SORT_KEY: 1},
        "inputStage": {"stage": "COLLSCAN"},
    }
    summary = summarise({"queryPlanner": {"winningPlan": plan}})
    assert not summary.uses_index
    assert summary.sorts_in_memory
    assert summary.stages == ("SORT", "COLLSCAN")
