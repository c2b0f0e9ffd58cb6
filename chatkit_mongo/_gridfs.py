"""GridFS bytes: how they are written (:func:`write_file`), and whose they are, the one
proof every delete of attachment bytes passes (:func:`erasable_file_ids`).

Why a proof at all: an attachment's ``file_id`` is a reference its owner's deletes
follow, and a reference can be wrong (an imported line, a document edited by hand). A
GridFS ``files`` document records its owner in ``metadata.owner``; the chunks record
nothing but their file's id. So an owner may erase a file's bytes when

- its id is an :func:`~chatkit_mongo.schema.owner_file_id` naming that owner (the id
  the attachment store writes now; no other owner's upload can make it), and its
  ``files`` document, if any, names that owner too; or
- its id is a bare ObjectId (a file uploaded before ids carried the owner), and its
  ``files`` document names that owner, or, while there is none (an upload killed
  mid-stream: :func:`write_file` writes the ``files`` document last), no attachment of another
  owner refers to the id. A fresh ObjectId, chosen by the upload that claims it, is what
  makes such an id one attachment's alone.

Any other value is no file id the store writes, and erases nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from bson import Int64, ObjectId
from gridfs import DEFAULT_CHUNK_SIZE

from ._driver import shielded
from .schema import Field, FileId, GridFSField, UploadField, file_id_owner


async def erasable_file_ids(
    files: Any, attachments: Any, owner: str, file_ids: list[Any]
) -> list[FileId]:
    """Those of ``file_ids`` whose bytes ``owner`` may delete (see the module docstring).

    One query on ``files`` by ``_id`` (routed by the ``files`` shard key). Only for a bare
    ObjectId without a ``files`` document, one more on the attachments by ``file_id``:
    no index serves it and it cannot carry the owner (it looks for the other owners), so
    it scans every shard; it is the rare path of an old release's cut-off upload, listed
    in :data:`chatkit_mongo.operations.sharding.SCATTERS`.
    """
    own = [
        file_id
        for file_id in file_ids
        if file_id_owner(file_id) == owner or type(file_id) is ObjectId
    ]
    if not own:
        return []
    owners: dict[Any, Any] = {}
    cursor = files.find({GridFSField.ID: {"$in": own}}, {GridFSField.METADATA: 1})
    async for file in cursor:
        owners[file[GridFSField.ID]] = (file.get(GridFSField.METADATA) or {}).get(Field.OWNER)
    legacy_without_file = [
        file_id for file_id in own if type(file_id) is ObjectId and file_id not in owners
    ]
    foreign: set[Any] = set()
    if legacy_without_file:
        others = attachments.find(
            {UploadField.FILE_ID: {"$in": legacy_without_file}, Field.OWNER: {"$ne": owner}},
            {UploadField.FILE_ID: 1},
        )
        foreign = {attachment[UploadField.FILE_ID] async for attachment in others}
    return [
        file_id for file_id in own if owners.get(file_id, owner) == owner and file_id not in foreign
    ]


async def write_file(
    files: Any,
    chunks: Any,
    file_id: Any,
    pieces: AsyncIterator[bytes],
    *,
    filename: str,
    metadata: dict[str, Any],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunks_per_insert: int = 4,
) -> int:
    """Write ``pieces`` as the GridFS file ``file_id`` of the bucket whose collections
    are ``files`` and ``chunks``, as the GridFS specification lays it out: chunk after
    chunk, each ``chunk_size`` bytes but the last, then the ``files`` document. Returns
    the file's length.

    Why not the driver's upload stream: PyMongo's (and the one Motor wraps) gathers up
    to 48 MB of chunks before one ``insert_many``, so an upload within the default
    ``max_bytes`` is held whole in memory. Here chunks are inserted
    ``chunks_per_insert`` at a time as soon as they are full: memory is that many
    chunks (about 1 MiB) and the piece being cut, whatever the file's size. Why not
    one chunk per insert: each insert is a round trip, during which neither the upload
    nor its encryption moves on; four chunks per trip made 4 MiB uploads about 1.15
    times faster than one on the wire server (6.8 against 7.7 ms per MiB plain, 11.5
    against 13.3 encrypted), and sixteen no faster than four.

    Why the ``files`` document last, as the driver does: a reader never finds a file
    whose chunks are not all written. An upload cut short leaves chunks without a file,
    which its caller deletes (or, should the process die, the orphan sweep). Each
    insert is shielded so that a cancelled request never leaves one in flight behind
    that cleanup. The specification's indexes are the store's (``schema.INDEXES``).
    """
    pending = bytearray()
    batch: list[dict[str, Any]] = []
    number = length = 0
    async for piece in pieces:
        pending += piece
        length += len(piece)
        while len(pending) >= chunk_size:
            with memoryview(pending) as view:  # released before the bytearray shrinks
                batch.append(_chunk(file_id, number, view[:chunk_size].tobytes()))
            del pending[:chunk_size]
            number += 1
            if len(batch) == chunks_per_insert:
                await shielded(chunks.insert_many(batch))
                batch = []
    if pending:
        batch.append(_chunk(file_id, number, bytes(pending)))
    if batch:
        await shielded(chunks.insert_many(batch))
    await shielded(
        files.insert_one(
            {
                GridFSField.ID: file_id,
                GridFSField.LENGTH: Int64(length),
                GridFSField.CHUNK_SIZE: chunk_size,
                GridFSField.UPLOAD_DATE: datetime.now(UTC),
                GridFSField.FILENAME: filename,
                GridFSField.METADATA: metadata,
            }
        )
    )
    return length


def _chunk(file_id: Any, number: int, data: bytes) -> dict[str, Any]:
    return {
        GridFSField.FILES_ID: file_id,
        GridFSField.CHUNK_NUMBER: number,
        GridFSField.CHUNK_DATA: data,
    }
