"""Running ``chatkit-mongo`` commands on the test backends, and data to run them on.

On the doubles the command gets the test's own database through the runner's ``obj``;
against a real server it connects by URI to the same database, as a user would.
Commands call ``asyncio.run``, so async tests run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import bson
import click
import httpx
from bson import Binary, ObjectId
from click.testing import CliRunner, Result

from chatkit_mongo import AsyncDatabaseLike, MongoStore
from chatkit_mongo.apps.cli import Connection, cli
from chatkit_mongo.schema import MODEL_KINDS, Field, FileId, GridFSField, owner_file_id

from . import capabilities
from .conftest import NAMES, RequestContext, is_server
from .samples import assistant_message, every_item, file_attachment, image_attachment, thread

CHUNK_SIZE = 4
DOCS_CLI: Final = Path(__file__).resolve().parent.parent / "docs" / "cli"
"""The pages of the CLI's documentation."""


def first_answer(port: int, process: subprocess.Popen[str]) -> httpx.Response:
    """The answer of ``serve`` (started as ``process`` on ``port``) to a threads.list,
    asked again until it listens, for 60 s at most, failing if the process ends."""
    body = {"type": "threads.list", "params": {}}
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            return httpx.post(f"http://127.0.0.1:{port}/chatkit", json=body, timeout=5)
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.2)


def command_names() -> list[str]:
    """Every command of ``chatkit-mongo``, the lazily loaded ``bench`` included."""
    return cli.list_commands(click.Context(cli))


def markdown_section(page: Path, heading: str) -> str:
    """The text under ``heading`` (a whole line, e.g. ``## `chatkit-mongo init```) up to
    the next heading of the same or a higher level; lines in code fences are no headings."""
    lines = page.read_text(encoding="utf-8").splitlines()
    level = len(heading.split(" ", 1)[0])
    assert heading in lines, f"{page.name} has no heading {heading!r}"
    start = lines.index(heading) + 1
    fenced = False
    for number in range(start, len(lines)):
        line = lines[number]
        fenced = fenced != line.startswith("```")
        marks = len(line) - len(line.lstrip("#"))
        if not fenced and 0 < marks <= level and line[marks : marks + 1] == " ":
            return "\n".join(lines[start:number])
    return "\n".join(lines[start:])


def invoke(backend: str, database: Any, *args: str, stdin: str | None = None) -> Result:
    """The CLI run on ``database``, with ``stdin`` as its standard input."""
    runner = CliRunner()
    if is_server(backend):  # the CLI opens its own PyMongo client from the URI
        uri = capabilities.server().uri
        return runner.invoke(cli, ["--uri", uri, "--database", database.name, *args], input=stdin)

    @asynccontextmanager
    async def opener(connection: Connection) -> AsyncIterator[AsyncDatabaseLike]:
        yield database

    return runner.invoke(cli, list(args), obj=opener, env={"MONGODB_URI": None}, input=stdin)


async def run(backend: str, database: Any, *args: str) -> Result:
    return await asyncio.to_thread(invoke, backend, database, *args)


async def seed(
    database: Any, owner: str, thread_ids: list[str], created_at: datetime
) -> list[FileId]:
    """Each thread with every item variant, a file and an image attachment, and their bytes
    (three chunks each) as an attachment store would write them; returns the file ids.

    The file attachment's bytes have an owner file id, as the store writes them now; the
    image's a bare ObjectId, as releases before file ids carried the owner wrote them: so
    every test on seeded data covers both shapes a deployment holds."""
    store: MongoStore[Any] = MongoStore(database)
    context = RequestContext(user_id=owner)
    file_ids: list[FileId] = []
    for thread_id in thread_ids:
        await store.save_thread(thread(thread_id, created_at=created_at), context)
        for number, item in enumerate(every_item(thread_id)):
            stamped = item.model_copy(update={"created_at": created_at + timedelta(seconds=number)})
            await store.add_thread_item(thread_id, stamped, context)
        for attachment in (
            file_attachment(f"atc_file_{thread_id}", thread_id),
            image_attachment(f"atc_image_{thread_id}", thread_id),
        ):
            await store.save_attachment(attachment, context)
            legacy = attachment.type == "image"
            file_ids.append(
                await store_bytes(database, owner, attachment.id, b"0123456789", legacy=legacy)
            )
    return file_ids


async def add_reply(database: Any, owner: str, thread_id: str, created_at: datetime) -> None:
    store: MongoStore[Any] = MongoStore(database)
    item = assistant_message(f"msg_late_{thread_id}", thread_id, created_at)
    await store.add_thread_item(thread_id, item, RequestContext(user_id=owner))


async def store_bytes(
    database: Any, owner: str, attachment_id: str, data: bytes, *, legacy: bool = False
) -> FileId:
    """A GridFS files document and its chunks, written as GridFS lays them out, under an
    owner file id (or, ``legacy``, a bare ObjectId as older releases wrote)."""
    file_id: FileId = ObjectId() if legacy else owner_file_id(owner)
    await database[NAMES.bucket_files].insert_one(
        {
            "_id": file_id,
            "length": len(data),
            "chunkSize": CHUNK_SIZE,
            "uploadDate": datetime(2026, 1, 2, 3, 4, 5, 678000),
            "filename": attachment_id,
            GridFSField.METADATA: {Field.OWNER: owner, Field.ATTACHMENT_ID: attachment_id},
        }
    )
    await database[NAMES.bucket_chunks].insert_many(
        [
            {
                GridFSField.FILES_ID: file_id,
                GridFSField.CHUNK_NUMBER: n,
                GridFSField.CHUNK_DATA: Binary(data[at : at + CHUNK_SIZE]),
            }
            for n, at in enumerate(range(0, len(data), CHUNK_SIZE))
        ]
    )
    return file_id


async def owner_documents(database: Any, owner: str) -> dict[str, list[dict[str, Any]]]:
    """Everything stored for ``owner``, per collection, in ``_id`` order; chunks included."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name in NAMES.by_kind(MODEL_KINDS).values():
        found[name] = await _all(database[name], {Field.OWNER: owner})
    files = await _all(database[NAMES.bucket_files], {GridFSField.METADATA_OWNER: owner})
    found[NAMES.bucket_files] = files
    found[NAMES.bucket_chunks] = await _all(
        database[NAMES.bucket_chunks],
        {GridFSField.FILES_ID: {"$in": [file["_id"] for file in files]}},
    )
    return found


async def all_documents(database: Any) -> dict[str, list[dict[str, Any]]]:
    names = [*NAMES.by_kind(MODEL_KINDS).values(), NAMES.bucket_files, NAMES.bucket_chunks]
    return {name: await _all(database[name], {}) for name in names}


async def _all(collection: Any, filter_: dict[str, Any]) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = await collection.find(filter_).sort("_id", 1).to_list(None)
    return documents


def encoded(documents: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    """Byte-exact BSON: an Int64 that came back as an int32 would differ here."""
    return {name: [bson.encode(d) for d in found] for name, found in documents.items()}
