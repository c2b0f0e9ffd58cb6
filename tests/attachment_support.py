"""Helpers shared by the attachment suites: building a GridFSAttachmentStore, feeding it
bytes that interleave, talking to its HTTP routes as a given user (through httpx, or
straight through ASGI with a body sent piece by piece), and watching for files written."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final

import httpx
from gridfs import AsyncGridFSBucket
from motor.motor_asyncio import AsyncIOMotorGridFSBucket
from pymongo.asynchronous.database import AsyncDatabase
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import ASGIApp, Message

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.asgi import attachment_routes

CHUNK: Final = 255 * 1024
"""GridFS's default chunk size: payloads are sized against it to span several chunks."""
BASE_URL: Final = "https://chat.example"


def upload_url(attachment_id: str, context: Any) -> str:
    return f"{BASE_URL}/attachments/{attachment_id}/upload"


def preview_url(attachment_id: str, context: Any) -> str:
    return f"{BASE_URL}/attachments/{attachment_id}"


def driver_bucket(database: Any, bucket_name: str) -> Any:
    """The driver's own GridFS bucket on ``database``: PyMongo's for a PyMongo Async
    database (and pymongo-async-mock's, which passes for one), Motor's otherwise (and
    mongomock-motor's, inside ``enabled_gridfs_integration``)."""
    if isinstance(database, AsyncDatabase):
        return AsyncGridFSBucket(database, bucket_name=bucket_name)
    return AsyncIOMotorGridFSBucket(database, bucket_name=bucket_name)


def make_attachments(store: MongoStore[Any], **options: Any) -> GridFSAttachmentStore[Any]:
    return GridFSAttachmentStore(store, upload_url=upload_url, preview_url=preview_url, **options)


async def interleaved(data: bytes) -> AsyncIterator[bytes]:
    """``data`` in pieces, yielding to the loop before each so concurrent uploads interleave."""
    for start in range(0, len(data), 50_000):
        await asyncio.sleep(0)
        yield data[start : start + 50_000]


def context_of(request: Request) -> dict[str, str]:
    """The caller's identity from an ``x-user`` header, as auth middleware would set it."""
    return {"user_id": request.headers.get("x-user", "")}


def as_user(user: str) -> dict[str, str]:
    """The headers of a request made by ``user`` (see ``context_of``)."""
    return {"x-user": user}


def routes_app(attachments: GridFSAttachmentStore[Any]) -> Starlette:
    """An application serving ``attachment_routes(attachments)`` and nothing else."""
    return Starlette(routes=attachment_routes(attachments, context=context_of))


@asynccontextmanager
async def routes_client(
    attachments: GridFSAttachmentStore[Any],
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client over ``attachment_routes(attachments)``, in process through ASGI."""
    transport = httpx.ASGITransport(app=routes_app(attachments))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


@dataclass(frozen=True)
class Exchange:
    """What one request through :func:`drive` came to."""

    status: int
    headers: dict[str, str]
    body: bytes
    consumed: int
    """How many body bytes the application asked for and received."""

    @property
    def error(self) -> str:
        """The message of an error answer (``{"error": ...}``)."""
        message: str = json.loads(self.body)["error"]
        return message


async def drive(
    app: ASGIApp,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Iterable[bytes] = (),
    *,
    disconnect: bool = False,
) -> Exchange:
    """One request straight through ASGI: ``body`` handed over one piece per ``receive``
    as the application asks, so an endless or huge body costs only what it reads. When
    the pieces run out the body ends, or with ``disconnect`` the client goes away.

    Why not httpx's ASGITransport: it reads a streamed body to its end before calling
    the application, so it can neither send an endless body nor count what was read.
    """
    pieces: Iterator[bytes] = iter(body)
    consumed = 0
    body_over = False
    response_done = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal consumed, body_over
        if not body_over:
            piece = next(pieces, None)
            if piece is not None:
                consumed += len(piece)
                return {"type": "http.request", "body": piece, "more_body": True}
            body_over = True
            if not disconnect:
                return {"type": "http.request", "body": b"", "more_body": False}
        if not disconnect:
            await response_done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            response_done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "server": ("chat.example", 443),
        "client": ("127.0.0.1", 50000),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return Exchange(
        status=start["status"],
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]},
        body=b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        consumed=consumed,
    )


_WATCHES: list[list[str]] = []
_WRITE_FLAGS: Final = os.O_WRONLY | os.O_RDWR | os.O_CREAT | getattr(os, "O_TMPFILE", 0)


def _record_writes(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCHES:
        return
    if event in ("tempfile.mkstemp", "tempfile.mkdtemp"):
        seen = f"{event} {args[0]}"
    elif event == "open":
        path, mode, flags = args
        writable = any(c in mode for c in "wax+") if isinstance(mode, str) else False
        if not (writable or (isinstance(flags, int) and flags & _WRITE_FLAGS)):
            return
        seen = f"open {path!r} mode={mode!r} flags={flags!r}"
    else:
        return
    for watch in _WATCHES:
        watch.append(seen)


sys.addaudithook(_record_writes)
"""Installed once (an audit hook cannot be removed) and idle unless a watch is open."""


@contextmanager
def files_written() -> Iterator[list[str]]:
    """Every file opened for writing, or temporary file or directory made, while open.

    Why audit events: a temporary file on Linux is opened with ``O_TMPFILE`` and never
    appears in a directory, and libraries import ``tempfile`` names before a test could
    patch them; the interpreter raises ``open`` and ``tempfile.*`` events for all of it.
    """
    seen: list[str] = []
    _WATCHES.append(seen)
    try:
        yield seen
    finally:
        _WATCHES.remove(seen)
