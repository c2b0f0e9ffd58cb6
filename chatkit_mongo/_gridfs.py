"""GridFS bytes: how they are written (:func:`write_file`) and read (:func:`find_file`,
:func:`read_file`), and whose they are, the one proof every delete of attachment bytes
passes (:func:`erasable_file_ids`).

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

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from bson import Int64, ObjectId
from gridfs import DEFAULT_CHUNK_SIZE
from gridfs.errors import CorruptGridFile

from ._driver import maybe_await, shielded
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


_CHUNKS_PER_TRIP: Final = 4
"""Chunks per insert of a write and per batch of a read: about 1 MiB (see write_file)."""


async def write_file(
    files: Any,
    chunks: Any,
    file_id: Any,
    pieces: AsyncIterator[bytes],
    *,
    filename: str,
    metadata: dict[str, Any],
) -> None:
    """Write ``pieces`` as the GridFS file ``file_id`` of the bucket whose collections
    are ``files`` and ``chunks``, as the GridFS specification lays it out: chunk after
    chunk, each ``DEFAULT_CHUNK_SIZE`` (255 KiB) but the last, then the ``files``
    document.

    Why not the driver's upload stream: PyMongo's (and the one Motor wraps) gathers up
    to 48 MB of chunks before one ``insert_many``, so an upload within the default
    ``max_bytes`` is held whole in memory. Here chunks are inserted
    ``_CHUNKS_PER_TRIP`` at a time as soon as they are full: memory is that many
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
    chunk_size = DEFAULT_CHUNK_SIZE
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
            if len(batch) == _CHUNKS_PER_TRIP:
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


def _chunk(file_id: Any, number: int, data: bytes) -> dict[str, Any]:
    return {
        GridFSField.FILES_ID: file_id,
        GridFSField.CHUNK_NUMBER: number,
        GridFSField.CHUNK_DATA: data,
    }


_CHUNK_FIELDS: Final = {GridFSField.CHUNK_NUMBER: 1, GridFSField.CHUNK_DATA: 1, GridFSField.ID: 0}


@dataclass(frozen=True)
class StoredFile:
    """A GridFS file as its ``files`` document describes it."""

    file_id: Any
    length: int
    chunk_size: int
    metadata: dict[str, Any]


async def find_file(files: Any, file_id: Any) -> StoredFile | None:
    """The file ``file_id`` of the bucket whose ``files`` collection is ``files``; None if
    there is none. ``CorruptGridFile`` if its document gives no usable length or chunk
    size (no such file is ever written here)."""
    document = await files.find_one({GridFSField.ID: file_id})
    if document is None:
        return None
    length, chunk_size = document.get(GridFSField.LENGTH), document.get(GridFSField.CHUNK_SIZE)
    if not (isinstance(length, int) and length >= 0 and isinstance(chunk_size, int)):
        raise CorruptGridFile(f"file {file_id!r} has no valid length and chunkSize")
    if chunk_size < 1 and length:
        raise CorruptGridFile(f"file {file_id!r} has a chunkSize of {chunk_size}")
    return StoredFile(file_id, int(length), chunk_size, document.get(GridFSField.METADATA) or {})


async def read_file(chunks: Any, file: StoredFile, start: int = 0) -> AsyncGenerator[bytes]:
    """The bytes of ``file`` from byte ``start`` on, chunk by chunk, from the bucket's
    ``chunks`` collection, checked as a GridFS reader must: every chunk there, in order,
    each ``chunk_size`` long but the last, which ends the file exactly; else
    ``CorruptGridFile``. The cursor is closed however the reading ends.

    Why not the driver's download stream: its chunk query takes the server's batches
    (mongod's first holds up to 16 MiB; jongodb answers with every chunk at once), so a
    download held that much of the file. Here a batch is ``_CHUNKS_PER_TRIP`` chunks.
    """
    if file.length <= start:
        return
    count = -(-file.length // file.chunk_size)
    number = start // file.chunk_size
    skip = start - number * file.chunk_size
    cursor = (
        chunks.find(
            {GridFSField.FILES_ID: file.file_id, GridFSField.CHUNK_NUMBER: {"$gte": number}},
            _CHUNK_FIELDS,
        )
        .sort(GridFSField.CHUNK_NUMBER, 1)
        .batch_size(_CHUNKS_PER_TRIP)
    )
    try:
        async for chunk in cursor:
            if number == count or chunk.get(GridFSField.CHUNK_NUMBER) != number:
                raise CorruptGridFile(
                    f"file {file.file_id!r}: expected chunk {number} of {count}, "
                    f"found chunk {chunk.get(GridFSField.CHUNK_NUMBER)!r}"
                )
            data = bytes(chunk.get(GridFSField.CHUNK_DATA) or b"")
            expected = min(file.chunk_size, file.length - number * file.chunk_size)
            if len(data) != expected:
                raise CorruptGridFile(
                    f"file {file.file_id!r}: chunk {number} holds {len(data)} bytes, "
                    f"{expected} expected"
                )
            yield data[skip:] if skip else data
            skip = 0
            number += 1
        if number != count:
            raise CorruptGridFile(f"file {file.file_id!r}: chunk {number} of {count} is missing")
    finally:
        await maybe_await(cursor.close())
