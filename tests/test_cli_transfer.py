"""``chatkit-mongo export`` and ``import``: lossless, idempotent, per owner, all or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import Int64, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from chatkit_mongo import MongoStore
from chatkit_mongo.operations.transfer import _BATCH_SIZE
from chatkit_mongo.schema import Field, GridFSField

from .cli_support import all_documents, encoded, owner_documents, run, seed
from .conftest import NAMES, RequestContext
from .samples import BASE_TIME, NESTED_METADATA, thread

_COLLECTION_OF = {
    "thread": NAMES.threads,
    "item": NAMES.items,
    "attachment": NAMES.attachments,
    "chunk": NAMES.bucket_chunks,
}


async def test_export_then_import_reproduces_every_document_and_byte(
    backend: str, database: Any, empty_database: Any, tmp_path: Path
) -> None:
    await seed(database, "alice", ["thr_a1", "thr_a2"], BASE_TIME)
    await seed(database, "bob", ["thr_b1"], BASE_TIME)
    await database[NAMES.threads].update_one(
        {Field.OWNER: "alice", Field.THREAD_ID: "thr_a1"},
        {"$set": {"extra_int64": Int64(7)}},
    )
    out = tmp_path / "alice.jsonl"

    exported = await run(backend, database, "export", "--owner", "alice", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    assert "2 threads, 22 items, 4 attachments, 4 files, 12 chunks" in exported.stderr
    imported = await run(backend, empty_database, "import", str(out))
    assert imported.exit_code == 0, imported.output

    source = await owner_documents(database, "alice")
    assert all(source.values())
    assert encoded(await owner_documents(empty_database, "alice")) == encoded(source)
    assert await owner_documents(empty_database, "bob") == await owner_documents(
        empty_database, "nobody"
    )


async def test_each_line_has_the_documented_plain_header(
    backend: str, database: Any, tmp_path: Path
) -> None:
    """Regression: the header said ``"format": {"$numberInt": "2"}``, the docs ``"format": 2``."""
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    out = tmp_path / "alice.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0

    lines = out.read_text(encoding="utf-8").splitlines()
    headers = [json.loads(line) for line in lines]
    assert {(type(h["kind"]), h["format"], tuple(h)) for h in headers} == {
        (str, 2, ("kind", "format", "document"))
    }
    assert all(line.startswith('{"kind": "') for line in lines)
    assert all('"format": 2, "document": {' in line for line in lines)


async def test_a_file_with_the_typed_header_of_earlier_versions_still_imports(
    backend: str, database: Any, empty_database: Any, tmp_path: Path
) -> None:
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    out, typed = tmp_path / "plain.jsonl", tmp_path / "typed.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    typed.write_text(
        "".join(
            json_util.dumps(json_util.loads(line), json_options=CANONICAL_JSON_OPTIONS) + "\n"
            for line in lines
        ),
        encoding="utf-8",
    )
    assert '"format": {"$numberInt": "2"}' in typed.read_text(encoding="utf-8")

    imported = await run(backend, empty_database, "import", str(typed))

    assert imported.exit_code == 0, imported.output
    source = await owner_documents(database, "alice")
    assert encoded(await owner_documents(empty_database, "alice")) == encoded(source)


async def test_importing_twice_changes_nothing(
    backend: str, database: Any, empty_database: Any, tmp_path: Path
) -> None:
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    out = tmp_path / "all.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    first = await run(backend, empty_database, "import", str(out))
    after_first = encoded(await all_documents(empty_database))

    second = await run(backend, empty_database, "import", str(out))

    assert second.exit_code == 0, second.output
    assert encoded(await all_documents(empty_database)) == after_first
    assert "thread: 1 inserted, 0 updated, 0 unchanged" in first.output
    assert "thread: 0 inserted, 0 updated, 1 unchanged" in second.output
    assert "chunk: 0 inserted, 0 updated, 6 unchanged" in second.output


async def test_import_restores_what_changed_since_the_export(
    backend: str, database: Any, tmp_path: Path
) -> None:
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    before = encoded(await all_documents(database))
    out = tmp_path / "all.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    await database[NAMES.items].update_one(
        {Field.ITEM_ID: "msg_user"}, {"$set": {f"{Field.DATA}.quoted_text": "changed"}}
    )

    result = await run(backend, database, "import", str(out))

    assert "item: 0 inserted, 1 updated, 10 unchanged" in result.output
    assert encoded(await all_documents(database)) == before


async def test_export_without_owner_holds_everyone(
    backend: str, database: Any, tmp_path: Path
) -> None:
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    await seed(database, "bob", ["thr_b1"], BASE_TIME)
    out = tmp_path / "all.jsonl"

    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0

    lines = out.read_text().splitlines()
    owners = {json.loads(line)["document"].get(Field.OWNER) for line in lines}
    assert owners == {"alice", "bob", None}  # None: files and chunks carry it elsewhere


async def test_export_goes_to_standard_output_without_out(backend: str, database: Any) -> None:
    await database[NAMES.threads].insert_one({})  # not alice's: must not appear
    store: MongoStore[Any] = MongoStore(database)
    await store.save_thread(thread("thr_meta", metadata=NESTED_METADATA), RequestContext("alice"))

    result = await run(backend, database, "export", "--owner", "alice")

    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["document"][Field.DATA]["metadata"]["scores"][2] == {
        "$numberLong": str(2**62)
    }


def _line(kind: str, document: dict[str, Any]) -> str:
    return bson.json_util.dumps({"kind": kind, "document": document}) + "\n"


@pytest.mark.parametrize(
    "case",
    [
        ("{not json\n", "line 2: not valid Extended JSON"),
        ('{"kind": "thread"}\n', 'line 2: expected {"kind": ..., "format": 2, "document"'),
        (_line("user", {}), "line 2: unknown kind 'user'"),
        (_line("thread", {Field.OWNER: "alice"}), "line 2: bad thread document"),
        (
            _line(
                "item",
                {
                    Field.OWNER: "a",
                    Field.THREAD_ID: "t",
                    Field.ITEM_ID: "i",
                    Field.DATA: {"id": "other"},
                },
            ),
            "data.id is 'other' but item_id is 'i'",
        ),
        (
            _line(
                "chunk",
                {
                    GridFSField.FILES_ID: bson.ObjectId("0" * 24),
                    GridFSField.CHUNK_NUMBER: 0,
                    GridFSField.CHUNK_DATA: b"x",
                },
            ),
            "line 2: chunk of file ObjectId('000000000000000000000000'), whose files document",
        ),
        (_line("thread", {Field.OWNER: {"$ne": None}, Field.THREAD_ID: "t"}), "owner must be"),
    ],
)
async def test_a_bad_line_is_named_and_nothing_is_written(
    backend: str, database: Any, empty_database: Any, tmp_path: Path, case: tuple[str, str]
) -> None:
    bad_line, message = case
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    out = tmp_path / "alice.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + bad_line + "".join(lines[1:]))

    result = await run(backend, empty_database, "import", str(out))

    assert result.exit_code == 1
    assert message in result.output
    assert not any((await all_documents(empty_database)).values())


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("owner file id", "is a file of the owner 'bob', not of 'mallory'"),
        ("bare ObjectId", "already exists and belongs to another owner"),
    ],
)
async def test_import_cannot_write_over_another_owners_bytes(
    backend: str, database: Any, tmp_path: Path, shape: str, message: str
) -> None:
    """Bob's file under each id shape the store holds: an owner file id naming another
    owner is refused from the line alone; a bare ObjectId by the database's check."""
    owner_form, bare = await seed(database, "bob", ["thr_b1"], BASE_TIME)
    file_id = owner_form if shape == "owner file id" else bare
    before = encoded(await all_documents(database))
    forged = {
        "_id": file_id,
        GridFSField.METADATA: {Field.OWNER: "mallory", Field.ATTACHMENT_ID: "x"},
    }
    chunk = {
        GridFSField.FILES_ID: file_id,
        GridFSField.CHUNK_NUMBER: 0,
        GridFSField.CHUNK_DATA: b"evil",
    }
    out = tmp_path / "forged.jsonl"
    out.write_text(_line("file", forged) + _line("chunk", chunk))

    result = await run(backend, database, "import", str(out))

    assert result.exit_code == 1
    assert message in result.output, result.output
    assert encoded(await all_documents(database)) == before


@pytest.mark.parametrize("kind", ["thread", "item", "attachment", "chunk"])
async def test_a_line_reusing_another_owners_id_writes_nothing(
    backend: str, database: Any, tmp_path: Path, kind: str
) -> None:
    """Regression: the earlier batches (alice's threads, items...) were written before
    the batch holding the stolen ``_id`` failed on the ``_id`` index."""
    await seed(database, "bob", ["thr_b1"], BASE_TIME)
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    out = tmp_path / "alice.jsonl"
    assert (
        await run(backend, database, "export", "--owner", "alice", "--out", str(out))
    ).exit_code == 0
    await run(backend, database, "purge", "--owner", "alice")
    before = encoded(await all_documents(database))
    bobs = await owner_documents(database, "bob")
    stolen = bobs[_COLLECTION_OF[kind]][-1]["_id"]
    lines = [json_util.loads(line) for line in out.read_text().splitlines()]
    number = max(n for n, line in enumerate(lines, start=1) if line["kind"] == kind)
    lines[number - 1]["document"]["_id"] = stolen
    out.write_text(
        "".join(json_util.dumps(line, json_options=CANONICAL_JSON_OPTIONS) + "\n" for line in lines)
    )

    result = await run(backend, database, "import", str(out))

    assert result.exit_code == 1, result.output
    assert f"line {number}: {kind} _id {stolen!r} already exists and belongs to" in result.output
    assert encoded(await all_documents(database)) == before


async def test_a_file_reusing_its_own_id_for_another_document_writes_nothing(
    backend: str, database: Any, empty_database: Any, tmp_path: Path
) -> None:
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    await seed(database, "bob", ["thr_b1"], BASE_TIME)
    out = tmp_path / "all.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    lines = [json_util.loads(line) for line in out.read_text().splitlines()]
    threads = [n for n, line in enumerate(lines) if line["kind"] == "thread"]
    lines[threads[1]]["document"]["_id"] = lines[threads[0]]["document"]["_id"]
    out.write_text(
        "".join(json_util.dumps(line, json_options=CANONICAL_JSON_OPTIONS) + "\n" for line in lines)
    )

    result = await run(backend, empty_database, "import", str(out))

    assert result.exit_code == 1, result.output
    assert f"line {threads[1] + 1}: thread _id" in result.output
    assert "is used twice" in result.output
    assert not any((await all_documents(empty_database)).values())


async def test_a_key_stored_under_another_id_writes_nothing(
    backend: str, database: Any, empty_database: Any, tmp_path: Path
) -> None:
    """Regression: alice's data seeded anew in the target has the same keys under other
    ``_id``s; replacing them cannot change an ``_id``, so a write failed mid-import."""
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    await seed(empty_database, "alice", ["thr_a1"], BASE_TIME)
    await empty_database[NAMES.threads].delete_many({})
    before = encoded(await all_documents(empty_database))
    out = tmp_path / "alice.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0

    result = await run(backend, empty_database, "import", str(out))

    assert result.exit_code == 1, result.output
    assert "line 2: item owner 'alice', thread_id 'thr_a1', item_id" in result.output
    assert "already exists with _id ObjectId(" in result.output
    assert encoded(await all_documents(empty_database)) == before


async def test_a_file_reusing_its_own_key_under_another_id_writes_nothing(
    backend: str, database: Any, empty_database: Any, tmp_path: Path
) -> None:
    await seed(database, "alice", ["thr_a1"], BASE_TIME)
    out = tmp_path / "all.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    first = out.read_text().splitlines(keepends=True)[0]
    twin = json_util.loads(first)
    twin["document"]["_id"] = bson.ObjectId()
    out.write_text(first + json_util.dumps(twin, json_options=CANONICAL_JSON_OPTIONS) + "\n")

    result = await run(backend, empty_database, "import", str(out))

    assert result.exit_code == 1, result.output
    assert "line 2: thread owner 'alice', thread_id 'thr_a1' is used twice" in result.output
    assert not any((await all_documents(empty_database)).values())


async def test_a_clash_past_the_first_batch_still_writes_nothing(
    backend: str, database: Any, tmp_path: Path
) -> None:
    """The pre-check goes batch by batch: a clash in the second one must stop the import
    before the first is written."""
    store: MongoStore[Any] = MongoStore(database)
    for number in range(_BATCH_SIZE + 1):
        await store.save_thread(thread(f"thr_{number:04}"), RequestContext("alice"))
    out = tmp_path / "alice.jsonl"
    assert (
        await run(backend, database, "export", "--owner", "alice", "--out", str(out))
    ).exit_code == 0
    await run(backend, database, "purge", "--owner", "alice")
    await store.save_thread(thread("thr_bob"), RequestContext("bob"))
    before = encoded(await all_documents(database))
    [stolen] = [d["_id"] for d in (await all_documents(database))[NAMES.threads]]
    lines = out.read_text().splitlines(keepends=True)
    last = json_util.loads(lines[-1])
    last["document"]["_id"] = stolen
    out.write_text("".join(lines[:-1]) + json_util.dumps(last, json_options=CANONICAL_JSON_OPTIONS))

    result = await run(backend, database, "import", str(out))

    assert result.exit_code == 1, result.output
    assert f"line {_BATCH_SIZE + 1}: thread _id {stolen!r} already exists" in result.output
    assert encoded(await all_documents(database)) == before
