"""The attachment store writes and reads GridFS files itself (``_gridfs``): laid out as
the GridFS specification says, so that the drivers' own buckets read them byte for
byte; with memory bounded by a few chunks, not the file, both ways; a damaged file
refused while it streams, never handed out short; and the specification's indexes on
whatever bucket the attachment store uses."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Final

import pytest
from bson import Int64
from gridfs.errors import CorruptGridFile

from chatkit_mongo import MongoStore
from chatkit_mongo.schema import Field, GridFSField, UploadField, bucket_collections

from .attachment_support import CHUNK, driver_bucket, make_attachments
from .conftest import (
    NAMES,
    SERVER_BACKENDS,
    RequestContext,
    close_client,
    make_client,
    scratch_database,
)

ALICE: Final = RequestContext("alice")
SIZES: Final = (0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, 9 * CHUNK + 1)
"""Empty, one byte, each side of a chunk boundary, and more chunks than one insert takes."""
MIB: Final = 1024 * 1024


def _payload(size: int) -> bytes:
    return bytes((i * 31 + i // 257) % 256 for i in range(size))


@pytest.mark.parametrize("size", SIZES)
async def test_a_file_is_laid_out_as_the_gridfs_specification_says(
    gridfs_store: MongoStore[Any], size: int
) -> None:
    attachments = make_attachments(gridfs_store)
    data = _payload(size)
    created = await attachments.create_and_upload("a.bin", "application/pdf", data, ALICE)
    database = gridfs_store.database
    stored = await database[NAMES.attachments].find_one({Field.ATTACHMENT_ID: created.id})
    assert stored is not None
    file_id = stored[UploadField.FILE_ID]
    file = await database[NAMES.bucket_files].find_one({GridFSField.ID: file_id})
    assert file is not None
    assert type(file[GridFSField.LENGTH]) in (int, Int64)
    assert file[GridFSField.LENGTH] == size
    assert file[GridFSField.CHUNK_SIZE] == CHUNK
    assert file[GridFSField.FILENAME] == "a.bin"
    assert isinstance(file[GridFSField.UPLOAD_DATE], datetime)
    assert file[GridFSField.METADATA] == {Field.OWNER: "alice", Field.ATTACHMENT_ID: created.id}
    chunks = [
        chunk
        async for chunk in database[NAMES.bucket_chunks]
        .find({GridFSField.FILES_ID: file_id})
        .sort(GridFSField.CHUNK_NUMBER, 1)
    ]
    assert [chunk[GridFSField.CHUNK_NUMBER] for chunk in chunks] == list(range(-(-size // CHUNK)))
    assert all(len(chunk[GridFSField.CHUNK_DATA]) == CHUNK for chunk in chunks[:-1])
    assert b"".join(bytes(chunk[GridFSField.CHUNK_DATA]) for chunk in chunks) == data
    # The driver's own bucket reads the file back exactly, as any GridFS tool would.
    grid_out = await driver_bucket(database, NAMES.bucket).open_download_stream(file_id)
    assert await grid_out.read() == data
    assert grid_out.length == size
    download = await attachments.open_download(created.id, ALICE)
    assert b"".join([chunk async for chunk in download.chunks]) == data


async def _generated(total: int, piece: int, digest: Any) -> AsyncIterator[bytes]:
    """``total`` bytes made as they are sent (the source holds one piece at a time),
    added to ``digest`` on the way."""
    for number in range(total // piece):
        data = number.to_bytes(8, "big") * (piece // 8)
        digest.update(data)
        yield data


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
async def test_uploads_and_downloads_hold_a_few_chunks_whatever_the_file_size(
    backend: str,
) -> None:
    """24 MiB through each real driver. The driver's own upload stream held all of it
    (it gathers up to 48 MB of chunks per insert), its download stream a server batch
    (jongodb: every chunk at once); the store holds a few chunks either way."""
    client = make_client(backend)
    sent, received = hashlib.sha256(), hashlib.sha256()
    try:
        async with scratch_database(client, backend) as database:
            store: MongoStore[Any] = MongoStore(database)
            attachments = make_attachments(store, max_bytes=32 * MIB)
            await store.ensure_indexes()
            tracemalloc.start()
            try:
                created = await attachments.create_and_upload(
                    "big.bin", "application/pdf", _generated(24 * MIB, 64 * 1024, sent), ALICE
                )
                _, upload_peak = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                download = await attachments.open_download(created.id, ALICE)
                async for chunk in download.chunks:
                    received.update(chunk)
                _, download_peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert download.length == 24 * MIB
    finally:
        await close_client(client)
    assert received.digest() == sent.digest()
    assert upload_peak < 4 * MIB, f"an upload of 24 MiB peaked at {upload_peak / MIB:.1f} MiB"
    assert download_peak < 4 * MIB, f"its download peaked at {download_peak / MIB:.1f} MiB"


async def test_another_bucket_gets_the_gridfs_specification_indexes(
    gridfs_store: MongoStore[Any],
) -> None:
    """Another bucket than the store's: its indexes join the store's check, since no
    driver upload stream creates them any more."""
    attachments = make_attachments(gridfs_store, bucket_name="other_files")
    await attachments.create_and_upload("a.bin", "application/pdf", b"bytes", ALICE)
    files, chunks = bucket_collections("other_files")
    database = gridfs_store.database
    files_keys = [dict(index["key"]) async for index in await _indexes(database[files])]
    chunk_indexes = [index async for index in await _indexes(database[chunks])]
    assert {GridFSField.FILENAME: 1, GridFSField.UPLOAD_DATE: 1} in files_keys
    unique = [dict(index["key"]) for index in chunk_indexes if index.get("unique")]
    assert {GridFSField.FILES_ID: 1, GridFSField.CHUNK_NUMBER: 1} in unique


async def _indexes(collection: Any) -> Any:
    """``list_indexes()``: a coroutine in PyMongo Async, a cursor at once in Motor."""
    listed = collection.list_indexes()
    return await listed if hasattr(listed, "__await__") else listed


async def _one_file(store: MongoStore[Any]) -> tuple[Any, Any, str]:
    """An attachment of three chunks and a partial one: its store, chunks and id."""
    attachments = make_attachments(store)
    created = await attachments.create_and_upload(
        "a.bin", "application/pdf", _payload(3 * CHUNK + 100), ALICE
    )
    return attachments, store.database[NAMES.bucket_chunks], created.id


DAMAGE: Final[dict[str, Callable[[Any, Any], Awaitable[Any]]]] = {
    "a chunk missing": lambda chunks, file_id: chunks.delete_one(
        {GridFSField.FILES_ID: file_id, GridFSField.CHUNK_NUMBER: 1}
    ),
    "a chunk cut short": lambda chunks, file_id: chunks.update_one(
        {GridFSField.FILES_ID: file_id, GridFSField.CHUNK_NUMBER: 2},
        {"$set": {GridFSField.CHUNK_DATA: b"short"}},
    ),
    "the last chunk missing": lambda chunks, file_id: chunks.delete_one(
        {GridFSField.FILES_ID: file_id, GridFSField.CHUNK_NUMBER: 3}
    ),
    "a chunk too many": lambda chunks, file_id: chunks.insert_one(
        {GridFSField.FILES_ID: file_id, GridFSField.CHUNK_NUMBER: 4, GridFSField.CHUNK_DATA: b"!"}
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
async def test_a_damaged_file_is_refused_while_it_streams_never_handed_out_whole(
    gridfs_store: MongoStore[Any], damage: str
) -> None:
    attachments, chunks, attachment_id = await _one_file(gridfs_store)
    first = await chunks.find_one({GridFSField.CHUNK_NUMBER: 0})
    assert first is not None
    await DAMAGE[damage](chunks, first[GridFSField.FILES_ID])
    download = await attachments.open_download(attachment_id, ALICE)
    with pytest.raises(CorruptGridFile, match="chunk"):
        async for _ in download.chunks:
            pass


async def test_a_files_document_without_a_usable_length_is_refused(
    gridfs_store: MongoStore[Any],
) -> None:
    attachments, _, attachment_id = await _one_file(gridfs_store)
    files = gridfs_store.database[NAMES.bucket_files]
    await files.update_one({}, {"$set": {GridFSField.LENGTH: "long"}})
    with pytest.raises(CorruptGridFile, match="length"):
        await attachments.open_download(attachment_id, ALICE)
