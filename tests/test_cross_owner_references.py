"""No reference a document carries lets one owner reach another owner's bytes.

Bob has every kind of GridFS object an owner can have, under both file id shapes a
deployment holds (the owner file id the store writes now, and the bare ObjectId of a
file uploaded before ids carried the owner): a complete attachment (files document and
chunks) and an upload under way (chunks, no files document yet: the driver writes it
last). Alice's export is then made to point at each of them through every
reference an import line carries (an attachment's ``file_id``, a file's ``_id``, its
chunks' ``files_id``): the import is refused by line and writes nothing. And with the
reference forged straight into the database (past the import), every action of alice
that follows a reference (download, delete_attachment, delete_thread, purge --owner)
leaves bob's documents and bytes exactly as they were.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pytest
from bson import Binary, ObjectId, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from chatkit.store import NotFoundError

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.schema import (
    Field,
    FileId,
    GridFSField,
    UploadField,
    file_id_owner,
    owner_file_id,
)

from .attachment_support import make_attachments
from .cli_support import all_documents, encoded, owner_documents, run, store_bytes
from .conftest import NAMES, RequestContext
from .samples import file_attachment, thread

ALICE: Final = RequestContext("alice")
BOB: Final = RequestContext("bob")
TARGETS: Final = ("complete", "uploading", "complete, old id", "uploading, old id")
"""Bob's objects: a finished attachment's file, an upload's id that has chunks only; each
under an owner file id and under a bare ObjectId."""


async def _bob(database: Any) -> dict[str, FileId]:
    """Bob's finished attachments and his uploads under way; the file id of each."""
    attachments = make_attachments(MongoStore(database))
    done = await attachments.create_and_upload("b.txt", "text/plain", b"bob's bytes", BOB)
    file = await database[NAMES.bucket_files].find_one({GridFSField.METADATA_OWNER: "bob"})
    assert file is not None
    assert file[GridFSField.METADATA][Field.ATTACHMENT_ID] == done.id
    assert file_id_owner(file["_id"]) == "bob"
    await attachments.store.save_attachment(file_attachment("atc_bob_old", None), BOB)
    old = await store_bytes(database, "bob", "atc_bob_old", b"bob's old bytes", legacy=True)
    await _link(database, "atc_bob_old", old, None)
    targets: dict[str, FileId] = {"complete": file["_id"], "complete, old id": old}
    for name, uploading in (("uploading", owner_file_id("bob")), ("uploading, old id", ObjectId())):
        attachment_id = f"atc_bob_{len(targets)}"
        await attachments.store.save_attachment(file_attachment(attachment_id, None), BOB)
        await _link(database, attachment_id, uploading, UploadField.RECEIVING)
        await database[NAMES.bucket_chunks].insert_one(
            {GridFSField.FILES_ID: uploading, GridFSField.CHUNK_NUMBER: 0, "data": Binary(b"up")}
        )
        targets[name] = uploading
    return targets


async def _link(database: Any, attachment_id: str, file_id: FileId, state: str | None) -> None:
    """Bob's attachment document pointing at ``file_id``, as the attachment store leaves it
    (a ``state`` while the bytes are on their way, none once stored)."""
    fields: dict[str, Any] = {UploadField.FILE_ID: file_id}
    if state is not None:
        fields[UploadField.STATE] = state
    await database[NAMES.attachments].update_one(
        {Field.OWNER: "bob", Field.ATTACHMENT_ID: attachment_id}, {"$set": fields}
    )


async def _alice(database: Any) -> tuple[GridFSAttachmentStore[Any], str]:
    """Alice's thread with one attachment and its bytes; the attachment's id."""
    attachments = make_attachments(MongoStore(database))
    await attachments.store.save_thread(thread("thr_a"), ALICE)
    made = await attachments.create_and_upload("a.txt", "text/plain", b"alice's", ALICE)
    linked = made.model_copy(update={"thread_id": "thr_a"})
    await attachments.store.save_attachment(linked, ALICE)
    return attachments, made.id


def _forge(lines: list[dict[str, Any]], slot: str, target: FileId) -> None:
    """Point the slot's reference(s) of alice's lines at ``target``."""
    for line in lines:
        document = line["document"]
        if slot == "attachment file_id" and line["kind"] == "attachment":
            document[UploadField.FILE_ID] = target
        if slot in ("file _id", "file _id and chunks") and line["kind"] == "file":
            document["_id"] = target
        if slot == "file _id and chunks" and line["kind"] == "chunk":
            document[GridFSField.FILES_ID] = target
    if slot == "file _id":
        lines[:] = [line for line in lines if line["kind"] != "chunk"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("slot", ["attachment file_id", "file _id", "file _id and chunks"])
async def test_an_import_pointing_at_another_owners_bytes_is_refused_by_line(
    gridfs_backend: str,
    gridfs_store: MongoStore[Any],
    tmp_path: Path,
    target: str,
    slot: str,
) -> None:
    database = gridfs_store.database
    await _alice(database)
    out = tmp_path / "alice.jsonl"
    exported = await run(gridfs_backend, database, "export", "--owner", "alice", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    await run(gridfs_backend, database, "purge", "--owner", "alice")
    bobs = await _bob(database)
    before = encoded(await all_documents(database))
    lines = [json_util.loads(line) for line in out.read_text().splitlines()]
    _forge(lines, slot, bobs[target])
    out.write_text(
        "".join(json_util.dumps(line, json_options=CANONICAL_JSON_OPTIONS) + "\n" for line in lines)
    )

    result = await run(gridfs_backend, database, "import", str(out))

    assert result.exit_code == 1, result.output
    assert "Error: line " in result.output, result.output
    assert encoded(await all_documents(database)) == before


Action = Callable[[GridFSAttachmentStore[Any], str], Awaitable[Any]]


async def _download(attachments: GridFSAttachmentStore[Any], attachment_id: str) -> None:
    with pytest.raises(NotFoundError):
        await attachments.read_bytes(attachment_id, ALICE)


ACTIONS: Final[dict[str, Action]] = {
    "download": _download,
    "delete_attachment": lambda a, i: a.delete_attachment(i, ALICE),
    "delete_thread": lambda a, i: a.store.delete_thread("thr_a", ALICE),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("action", [*ACTIONS, "purge --owner"])
async def test_a_forged_reference_reaches_nothing_of_another_owner(
    gridfs_backend: str, gridfs_store: MongoStore[Any], target: str, action: str
) -> None:
    database = gridfs_store.database
    attachments, attachment_id = await _alice(database)
    bobs = await _bob(database)
    await database[NAMES.attachments].update_one(
        {Field.OWNER: "alice", Field.ATTACHMENT_ID: attachment_id},
        {"$set": {UploadField.FILE_ID: bobs[target]}},
    )
    bob_before = encoded(await owner_documents(database, "bob"))
    chunks_before = await database[NAMES.bucket_chunks].count_documents(
        {GridFSField.FILES_ID: bobs[target]}
    )

    if action == "purge --owner":
        result = await run(gridfs_backend, database, "purge", "--owner", "alice")
        assert result.exit_code == 0, result.output
        assert not any((await owner_documents(database, "alice")).values())
    else:
        await ACTIONS[action](attachments, attachment_id)

    assert encoded(await owner_documents(database, "bob")) == bob_before
    assert chunks_before == await database[NAMES.bucket_chunks].count_documents(
        {GridFSField.FILES_ID: bobs[target]}
    )
    assert await database[NAMES.attachments].count_documents({Field.OWNER: "bob"}) == 4


@pytest.mark.needs("find_one_and_delete")  # the sweep takes abandoned uploads with it
@pytest.mark.parametrize("target", TARGETS)
async def test_the_sweep_of_an_abandoned_upload_never_deletes_another_owners_bytes(
    gridfs_store: MongoStore[Any], target: str
) -> None:
    """Alice's upload, abandoned long ago, points (forged) at one of bob's files: the
    sweep removes alice's attachment, and bob's files and chunks stay, because the sweep
    deletes bytes through the same ownership proof as every other delete."""
    database = gridfs_store.database
    attachments, attachment_id = await _alice(database)
    bobs = await _bob(database)
    await database[NAMES.attachments].update_one(
        {Field.OWNER: "alice", Field.ATTACHMENT_ID: attachment_id},
        {
            "$set": {
                UploadField.FILE_ID: bobs[target],
                UploadField.STATE: UploadField.RECEIVING,
                UploadField.PENDING_SINCE: datetime(2000, 1, 1, tzinfo=UTC),
            }
        },
    )
    bob_before = encoded(await owner_documents(database, "bob"))
    chunks_before = await database[NAMES.bucket_chunks].count_documents(
        {GridFSField.FILES_ID: bobs[target]}
    )
    assert chunks_before

    report = await attachments.sweep_orphans(abandoned_after=timedelta(hours=24))

    assert report.abandoned_uploads == 1
    assert await database[NAMES.attachments].count_documents({Field.OWNER: "alice"}) == 0
    assert encoded(await owner_documents(database, "bob")) == bob_before
    assert chunks_before == await database[NAMES.bucket_chunks].count_documents(
        {GridFSField.FILES_ID: bobs[target]}
    )
