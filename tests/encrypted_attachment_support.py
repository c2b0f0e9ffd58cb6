"""Encrypted attachment stores on the real drivers, for the encrypted attachment suites:
a MongoStore with ``encryption=`` on a fresh database of the suite's server, with its
attachment store; and what the raw database holds of an attachment.

Why only the real drivers: libmongocrypt's key vault needs a real server (the in-process
doubles cannot run it), see ``tests/encryption_support.py``.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import bson

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.schema import Field, GridFSField

from .attachment_support import make_attachments
from .conftest import NAMES

MARKER: Final = b"zebra-crossing-7f3a"
"""A plaintext that must never appear in the database once encrypted."""


def fresh_database(client: Any) -> Any:
    """A database no other test uses (jongodb cannot drop one; it ends with the server)."""
    return client[f"chatkit_test_{uuid.uuid4().hex[:12]}"]


def encrypted_attachments(
    database: Any, settings: Encryption | None, **options: Any
) -> GridFSAttachmentStore[Any]:
    """An attachment store over a MongoStore on ``database`` with ``encryption=settings``
    (None: a store without encryption on the same collections)."""
    store_options = {
        name: options.pop(name) for name in ("wrap_collection", "retention") if name in options
    }
    store: MongoStore[Any] = MongoStore(database, encryption=settings, **store_options)
    return make_attachments(store, **options)


async def file_of(attachments: GridFSAttachmentStore[Any], attachment_id: str) -> dict[str, Any]:
    """The GridFS ``files`` document the attachment refers to now."""
    database = attachments.store.database
    document = await database[NAMES.attachments].find_one({Field.ATTACHMENT_ID: attachment_id})
    assert document is not None
    file: dict[str, Any] | None = await database[NAMES.bucket_files].find_one(
        {GridFSField.ID: document["file_id"]}
    )
    assert file is not None
    return file


async def raw_bytes(database: Any) -> bytes:
    """Every byte of every attachment, file and chunk document, BSON-encoded, to search
    for plaintext in."""
    everything = b""
    for name in (NAMES.attachments, NAMES.bucket_files, NAMES.bucket_chunks):
        async for document in database[name].find({}):
            everything += bson.encode(document)
    return everything


async def stored_files(database: Any) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = await database[NAMES.bucket_files].find({}).to_list(None)
    return files
