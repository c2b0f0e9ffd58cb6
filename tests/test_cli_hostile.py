"""Hostile input to the CLI: import files that lie, ``--owner`` values of odd shape, and
durations past what a date can hold. Each is refused with a message saying what was
wrong (exit code 1 or 2), and nothing is written or erased.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import click
import pytest
from bson import MinKey, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from chatkit_mongo.apps.cli import _Duration

from .cli_support import all_documents, encoded, run, seed
from .samples import BASE_TIME


def _mutated(lines: list[str], kind: str, change: Any) -> str:
    """The export with ``change`` applied to the document of the last line of ``kind``."""
    parsed = [json_util.loads(line, json_options=CANONICAL_JSON_OPTIONS) for line in lines]
    [*_, target] = [line for line in parsed if line["kind"] == kind]
    change(target["document"])
    return "".join(json_util.dumps(p, json_options=CANONICAL_JSON_OPTIONS) + "\n" for p in parsed)


def _set(path: str, value: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            document = document[part]
        document[last] = value

    return change


def _drop(name: str) -> Any:
    return lambda document: document.pop(name)


_HEX: Final = "0123456789abcdef01234567"
HOSTILE_DOCUMENTS: Final[dict[str, tuple[str, Any, str]]] = {
    "operator key": ("item", _set("$set", {"owner": "bob"}), "{'$set': ...} is not an Extended"),
    "operator key in a file": ("file", _set("$where", "1"), "{'$where': ...} is not an Extended"),
    "regex owner": ("thread", _set("owner", {"$regex": "."}), "owner must be a str"),
    "oid owner": ("attachment", _set("owner", {"$oid": "0" * 24}), "owner must be a str"),
    "date thread id": ("thread", _set("thread_id", {"$date": 0}), "thread_id must be a str"),
    "empty owner": ("item", _set("owner", ""), "owner must not be empty"),
    "no metadata": ("file", _drop("metadata"), "bad file document"),
    "file owner injection": ("file", _set("metadata.owner", {"$ne": None}), "{'$ne': ...} is not"),
    "regex file owner": ("file", _set("metadata.owner", re.compile(".")), "owner must be a str"),
    "operator file id": ("file", _set("_id", {"$ne": None}), "{'$ne': ...} is not"),
    "regex file id": ("file", _set("_id", re.compile(".")), "_id must be a file id"),
    "string file id": ("file", _set("_id", "x"), "_id must be a file id"),
    "owner without a hex": ("file", _set("_id", "alice/x"), "_id must be a file id"),
    "owner, upper-case hex": ("file", _set("_id", "alice/" + _HEX.upper()), "must be a file id"),
    "hex without an owner": ("file", _set("_id", "/" + _HEX), "_id must be a file id"),
    "bob's file id": ("file", _set("_id", "bob/" + _HEX), "is a file of the owner 'bob', not"),
    "string chunk files_id": ("chunk", _set("files_id", "x"), "files_id must be a file id"),
    "regex chunk files_id": ("chunk", _set("files_id", re.compile(".")), "must be a file id"),
    "operator chunk n": ("chunk", _set("n", {"$ne": None}), "{'$ne': ...} is not"),
    "negative chunk n": ("chunk", _set("n", -1), "n must be a non-negative int"),
    "bool chunk n": ("chunk", _set("n", True), "n must be a non-negative int"),
    "text chunk data": ("chunk", _set("data", "abc"), "data must be binary data"),
    "regex file_id": ("attachment", _set("file_id", re.compile(".")), "file_id must be a file"),
    "minkey file_id": ("attachment", _set("file_id", MinKey()), "file_id must be a file id"),
    "int file_id": ("attachment", _set("file_id", 7), "file_id must be a file id"),
    "bob's file_id": ("attachment", _set("file_id", "bob/" + _HEX), "of the owner 'bob', not"),
    "int thread _id": ("thread", _set("_id", 7), "_id must be an ObjectId"),
    "operator attachment thread_id": ("attachment", _set("thread_id", {"$gt": ""}), "is not"),
    "no owner": ("attachment", _drop("owner"), "bad attachment document"),
    "no data": ("item", _drop("data"), "bad item document"),
}
"""Per case: which kind of line is changed, how, and what the error says."""
BROKEN_EXTENDED_JSON: Final = [
    '{"kind": "thread", "document": {"owner": {"$numberLong": "x"}}}\n',
    '{"kind": "thread", "document": {"_id": {"$oid": "zz"}}}\n',
    '{"kind": "thread", "document": {"created_at": {"$date": "not a date"}}}\n',
    '{"kind": "thread", "document": {"owner": "a", "owner": "b"}, "kind": "item"}\n',
    '["kind", "thread"]\n',
    '{"kind": "thread", "document": []}\n',
    '{"kind": {"$ne": null}, "document": {}}\n',
]


async def _exported(backend: str, database: Any, tmp_path: Path) -> list[str]:
    await seed(database, "alice", ["thr_a"], BASE_TIME)
    out = tmp_path / "alice.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    return out.read_text().splitlines()


@pytest.mark.parametrize("case", HOSTILE_DOCUMENTS)
async def test_hostile_documents_are_refused_by_line_and_nothing_is_written(
    backend: str, database: Any, empty_database: Any, tmp_path: Path, case: str
) -> None:
    kind, change, message = HOSTILE_DOCUMENTS[case]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_mutated(await _exported(backend, database, tmp_path), kind, change))

    result = await run(backend, empty_database, "import", str(bad))

    assert result.exit_code == 1, result.output
    assert "line " in result.output, result.output
    assert message in result.output, result.output
    assert not any((await all_documents(empty_database)).values())


@pytest.mark.parametrize("line", BROKEN_EXTENDED_JSON)
async def test_broken_extended_json_is_refused_and_nothing_is_written(
    backend: str, database: Any, empty_database: Any, tmp_path: Path, line: str
) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = await _exported(backend, database, tmp_path)
    bad.write_text("\n".join(lines) + "\n" + line)

    result = await run(backend, empty_database, "import", str(bad))

    assert result.exit_code == 1, result.output
    assert f"line {len(lines) + 1}:" in result.output, result.output
    assert not any((await all_documents(empty_database)).values())


@pytest.mark.parametrize(
    ("owner", "message"),
    [("", "owner must not be empty"), ("o" * 513, "at most 512"), ("\ud800", "surrogate")],
)
@pytest.mark.parametrize("command", ["export", "purge"])
async def test_bad_owner_values_are_refused_and_nothing_changes(
    backend: str, database: Any, command: str, owner: str, message: str
) -> None:
    await seed(database, "alice", ["thr_a"], BASE_TIME)
    before = encoded(await all_documents(database))

    result = await run(backend, database, command, "--owner", owner)

    assert result.exit_code == 1, result.output
    assert message in result.output
    assert encoded(await all_documents(database)) == before


@pytest.mark.parametrize("owner", ['{"$ne": null}', "alice*", ".*", "ALICE", "alice "])
async def test_owner_values_that_look_like_patterns_match_only_themselves(
    backend: str, database: Any, owner: str
) -> None:
    await seed(database, "alice", ["thr_a"], BASE_TIME)
    before = encoded(await all_documents(database))

    exported = await run(backend, database, "export", "--owner", owner)
    purged = await run(backend, database, "purge", "--owner", owner)

    assert exported.exit_code == purged.exit_code == 0
    assert exported.stdout == ""
    assert "erased 0 threads, 0 items, 0 attachments, 0 files, 0 chunks" in purged.output
    assert encoded(await all_documents(database)) == before


@pytest.mark.parametrize("text", ["99999999999999w", "1000000000d", "\u0663d", "\uff13d", "1_0d"])
def test_durations_past_a_timedelta_or_in_other_digits_are_refused(text: str) -> None:
    """Regression: the first two raised OverflowError, the next two read as 3 days."""
    with pytest.raises(click.BadParameter, match=r"is not a duration like 30d|longer than"):
        _Duration().convert(text, None, None)


async def test_a_duration_reaching_back_before_year_one_is_refused(
    backend: str, database: Any
) -> None:
    """Regression: ``now - older_than`` overflowed with a traceback."""
    await seed(database, "alice", ["thr_a"], BASE_TIME)
    before = encoded(await all_documents(database))

    result = await run(backend, database, "purge", "--older-than", "999999999d")

    assert result.exit_code == 1, result.output
    assert "older_than (999999999 days, 0:00:00) reaches back before the year 1" in result.output
    assert encoded(await all_documents(database)) == before
