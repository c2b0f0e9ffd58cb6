"""Encrypted data for the lifecycle tests (export, import, purge, init, doctor) on the
real drivers, and the ``chatkit-mongo`` command run against it as an operator would."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bson import Binary
from click.testing import CliRunner, Result

from chatkit_mongo import MongoStore
from chatkit_mongo._encryption import OwnerEncryption
from chatkit_mongo.apps.cli import cli
from chatkit_mongo.encryption import DEFAULT_LOCAL_KEY_VARIABLE, Encryption
from chatkit_mongo.schema import Field, GridFSField, owner_file_id

from . import capabilities
from .conftest import NAMES, RequestContext
from .encryption_support import chunked, collect
from .samples import every_item, file_attachment, thread

SECRET = "zebra-crossing-7f3a"
"""Content that must never appear in the clear where the content is encrypted."""
CHUNK_SIZE = 1024
"""The GridFS chunk size of the encrypted files written here: several chunks per file."""


def plaintext_bytes(owner: str) -> bytes:
    """An attachment's bytes: three chunks in the clear (four encrypted), with the secret inside."""
    return (f"{owner}'s file {SECRET} ".encode() * 150)[:3000]


def fresh_database(client: Any) -> Any:
    return client[f"chatkit_test_{uuid.uuid4().hex[:12]}"]


def write_key_file(directory: Path, settings: Encryption) -> Path:
    """The settings' local master key as a file, as ``--master-key-file`` reads it."""
    path = directory / f"master-{uuid.uuid4().hex[:6]}.key"
    path.write_bytes(bytes(settings.kms_providers["local"]["key"]))
    return path


@dataclass
class Seeded:
    """What :func:`seed_encrypted` wrote for one owner."""

    owner: str
    thread_id: str
    attachment_id: str
    file_id: str
    data: bytes


async def seed_encrypted(
    database: Any, settings: Encryption, owner: str, thread_id: str = "thr_1"
) -> Seeded:
    """A thread titled with the secret, every item variant, a file attachment, all through
    an encrypted MongoStore; and the attachment's bytes as an encrypted GridFS file
    (``encrypt_stream`` bound to the attachment id, ``metadata.encrypted``), the form the
    attachment store writes."""
    store: MongoStore[Any] = MongoStore(database, encryption=settings)
    context = RequestContext(user_id=owner)
    try:
        await store.save_thread(thread(thread_id, title=f"{SECRET} {owner}"), context)
        for item in every_item(thread_id):
            await store.add_thread_item(thread_id, item, context)
        attachment = file_attachment(f"atc_{owner}_{thread_id}", thread_id)
        await store.save_attachment(attachment, context)
        engine = store.persistence.encryption
        assert engine is not None
        data = plaintext_bytes(owner)
        file_id = await write_encrypted_file(database, engine, owner, attachment.id, data)
    finally:
        await store.close()
    return Seeded(owner, thread_id, attachment.id, file_id, data)


async def write_encrypted_file(
    database: Any, engine: OwnerEncryption, owner: str, attachment_id: str, data: bytes
) -> str:
    stream = await collect(engine.encrypt_stream(owner, chunked(data, 700), bound_to=attachment_id))
    file_id = owner_file_id(owner)
    await database[NAMES.bucket_files].insert_one(
        {
            "_id": file_id,
            "length": len(stream),
            "chunkSize": CHUNK_SIZE,
            "uploadDate": datetime(2026, 1, 2, 3, 4, 5, 678000),
            "filename": attachment_id,
            GridFSField.METADATA: {
                Field.OWNER: owner,
                Field.ATTACHMENT_ID: attachment_id,
                GridFSField.ENCRYPTED: True,
            },
        }
    )
    await database[NAMES.bucket_chunks].insert_many(
        [
            {
                GridFSField.FILES_ID: file_id,
                GridFSField.CHUNK_NUMBER: n,
                GridFSField.CHUNK_DATA: Binary(stream[at : at + CHUNK_SIZE]),
            }
            for n, at in enumerate(range(0, len(stream), CHUNK_SIZE))
        ]
    )
    return file_id


async def file_bytes(database: Any, file_id: Any) -> bytes:
    cursor = database[NAMES.bucket_chunks].find({GridFSField.FILES_ID: file_id})
    chunks = await cursor.sort(GridFSField.CHUNK_NUMBER, 1).to_list(None)
    return b"".join(bytes(chunk[GridFSField.CHUNK_DATA]) for chunk in chunks)


def invoke(database: Any, key_vault: str, *args: str, master_key: Path | None = None) -> Result:
    """``chatkit-mongo`` on the session's server and ``database``, with ``--key-vault``,
    and the master key only if given (the environment's is cleared)."""
    argv = ["--uri", capabilities.server().uri, "--database", database.name]
    argv += ["--key-vault", key_vault]
    if master_key is not None:
        argv += ["--master-key-file", str(master_key)]
    return CliRunner().invoke(cli, [*argv, *args], env={DEFAULT_LOCAL_KEY_VARIABLE: None})


async def run(database: Any, key_vault: str, *args: str, master_key: Path | None = None) -> Result:
    """:func:`invoke` from an async test: the command runs its own event loop."""
    return await asyncio.to_thread(invoke, database, key_vault, *args, master_key=master_key)
