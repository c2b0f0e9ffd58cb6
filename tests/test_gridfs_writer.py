"""The attachment store writes GridFS files itself (``_gridfs.write_file``): laid out as
the GridFS specification says, so that the drivers' own buckets read them byte for
byte; with memory bounded by a chunk, not the file; and with the specification's
indexes on whatever bucket the attachment store uses."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final

import pytest
from bson import Int64

from chatkit_mongo import MongoStore
from chatkit_mongo._driver import gridfs_bucket
from chatkit_mongo.schema import Field, GridFSField, UploadField, bucket_collections

from .attachment_support import CHUNK, make_attachments
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
    grid_out = await gridfs_bucket(database, NAMES.bucket).open_download_stream(file_id)
    assert await grid_out.read() == data
    assert grid_out.length == size
    download = await attachments.open_download(created.id, ALICE)
    assert b"".join([chunk async for chunk in download.chunks]) == data


async def _generated(total: int, piece: int) -> AsyncIterator[bytes]:
    """``total`` bytes made as they are sent: the source holds one piece at a time."""
    for number in range(total // piece):
        yield number.to_bytes(8, "big") * (piece // 8)


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
async def test_an_upload_holds_about_a_chunk_whatever_the_file_size(backend: str) -> None:
    """24 MiB through each real driver: the driver's own upload stream held all of it
    (it gathers up to 48 MB of chunks per insert); the store holds about one chunk."""
    client = make_client(backend)
    try:
        async with scratch_database(client, backend) as database:
            store: MongoStore[Any] = MongoStore(database)
            attachments = make_attachments(store, max_bytes=32 * MIB)
            await store.ensure_indexes()
            tracemalloc.start()
            try:
                created = await attachments.create_and_upload(
                    "big.bin", "application/pdf", _generated(24 * MIB, 64 * 1024), ALICE
                )
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            download = await attachments.open_download(created.id, ALICE)
            received = hashlib.sha256()
            async for chunk in download.chunks:
                received.update(chunk)
            sent = hashlib.sha256()
            async for piece in _generated(24 * MIB, 64 * 1024):
                sent.update(piece)
            assert download.length == 24 * MIB
            assert received.digest() == sent.digest()
    finally:
        await close_client(client)
    assert peak < 4 * MIB, f"an upload of 24 MiB peaked at {peak / MIB:.1f} MiB"


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
