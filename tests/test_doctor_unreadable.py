"""``chatkit-mongo doctor`` finds the documents the installed ChatKit cannot read: per
collection, a count and a few ids; it exits 1 then; ``--sample N`` bounds the read."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import Binary

from chatkit_mongo import MongoStore

from .cli_support import run
from .conftest import NAMES, RequestContext
from .samples import BASE_TIME, assistant_message, file_attachment, thread
from .unreadable_support import DAMAGES, damage_attachment, damage_item, damage_thread

ALICE = RequestContext("alice")


def _line(output: str, collection: str) -> str:
    lines = [
        line
        for line in output.splitlines()
        if "unreadable documents: " in line and f": {collection}:" in line
    ]
    assert len(lines) == 1, output
    return lines[0]


async def _seed(database: Any, items: int) -> MongoStore[Any]:
    store: MongoStore[Any] = MongoStore(database)
    await store.save_thread(thread("thr_1"), ALICE)
    await store.save_thread(thread("thr_2"), ALICE)
    await store.save_attachment(file_attachment("atc_1", "thr_1"), ALICE)
    for n in range(items):
        created = BASE_TIME + timedelta(seconds=n)
        await store.add_thread_item(
            "thr_1", assistant_message(f"msg_{n:02d}", created_at=created), ALICE
        )
    return store


async def test_doctor_names_unreadable_documents_per_collection(
    backend: str, database: Any
) -> None:
    await _seed(database, 9)
    for n in range(8):  # more than it names
        damage = list(DAMAGES.values())[n % 3]
        await damage_item(database, damage, "alice", "thr_1", f"msg_{n:02d}")
    await damage_thread(database, DAMAGES["truncated"], "alice", "thr_2")
    await damage_attachment(database, DAMAGES["hand-edited field"], "alice", "atc_1")

    result = await run(backend, database, "doctor")

    assert result.exit_code == 1
    items = _line(result.output, NAMES.items)
    assert items.startswith("fail")
    assert "8 documents of 9 documents checked cannot be read by ChatKit" in items
    assert "and 3 more" in items
    # the newest first, each with its first validation error
    assert "'msg_07' (assistant_message.created_at: Input should be a valid datetime)" in items
    assert "'msg_06' (Input tag 'hologram' found using 'type'" in items
    assert "'msg_05' (Unable to extract tag using discriminator 'type')" in items
    threads = _line(result.output, NAMES.threads)
    assert "1 document of 2 documents checked" in threads
    assert "'thr_2'" in threads
    assert "'atc_1' (" in _line(result.output, NAMES.attachments)
    assert "next: documents named above cannot be read by the installed ChatKit" in result.output


async def test_doctor_passes_when_every_document_reads(backend: str, database: Any) -> None:
    await _seed(database, 2)
    assert (await run(backend, database, "init")).exit_code == 0

    result = await run(backend, database, "doctor")

    for collection, count in ((NAMES.threads, 2), (NAMES.items, 2), (NAMES.attachments, 1)):
        line = _line(result.output, collection)
        assert line.startswith("ok"), line
        assert f"{count} document" in line
        assert "all readable by ChatKit" in line
    assert "cannot be read" not in result.output


async def test_sample_bounds_the_documents_read_to_the_newest(backend: str, database: Any) -> None:
    await _seed(database, 6)
    await damage_item(database, DAMAGES["truncated"], "alice", "thr_1", "msg_00")  # oldest
    await damage_item(database, DAMAGES["truncated"], "alice", "thr_1", "msg_05")  # newest

    sampled = await run(backend, database, "doctor", "--sample", "2")
    refused = await run(backend, database, "doctor", "--sample", "0")

    line = _line(sampled.output, NAMES.items)
    assert "1 document of 2 documents checked (the 2 newest at most)" in line
    assert "'msg_05'" in line
    assert "'msg_00'" not in line
    assert sampled.exit_code == 1
    assert refused.exit_code == 1  # a value out of range: the CLI policy's runtime error
    assert "is not a whole number from 1" in refused.output


async def test_encrypted_content_is_counted_not_read(backend: str, database: Any) -> None:
    """Its validation needs the owner's key: said, never passed off as checked."""
    await _seed(database, 1)
    key = {"owner": "alice", "thread_id": "thr_1", "item_id": "msg_00"}
    await database[NAMES.items].update_one(key, {"$set": {"data": Binary(b"\x01" * 40, 6)}})

    result = await run(backend, database, "doctor")

    line = _line(result.output, NAMES.items)
    assert line.startswith("ok"), line
    assert "1 document checked, 1 encrypted document not read" in line
