"""Helpers shared by the attachment suites: building a GridFSAttachmentStore, feeding it
bytes that interleave, and talking to its HTTP routes as a given user."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
from starlette.applications import Starlette
from starlette.requests import Request

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.asgi import attachment_routes

CHUNK: Final = 255 * 1024
"""GridFS's default chunk size: payloads are sized against it to span several chunks."""
BASE_URL: Final = "https://chat.example"


def upload_url(attachment_id: str, context: Any) -> str:
    return f"{BASE_URL}/attachments/{attachment_id}/upload"


def preview_url(attachment_id: str, context: Any) -> str:
    return f"{BASE_URL}/attachments/{attachment_id}"


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


@asynccontextmanager
async def routes_client(
    attachments: GridFSAttachmentStore[Any],
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client over ``attachment_routes(attachments)``, in process through ASGI."""
    app = Starlette(routes=attachment_routes(attachments, context=context_of))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client
