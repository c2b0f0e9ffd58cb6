"""A complete ChatKit server on FastAPI, with its data in MongoDB through chatkit-mongo.

Copy this file to start an integration. It has everything a real server needs, and
nothing it does needs a model or an API key, so it runs as it is:

* the request context (here the ``X-User-Id`` header: put your authentication there);
* a ``ChatKitServer`` whose ``respond`` is an async generator streaming its reply;
* ``POST /chatkit``: ChatKit's streaming results as server-sent events, the others as JSON;
* the attachment routes of ``chatkit_mongo.asgi`` (direct and two-phase uploads, downloads);
* a ``ThreadItemConverter`` that reads attachment bytes from GridFS for the model;
* a lifespan that creates the indexes on start and closes the store on shutdown.

Run it (``pip install 'chatkit-mongo[examples]'`` from a checkout, see docs/getting-started.md)::

    MONGODB_URI=mongodb://localhost:27017 uvicorn --factory examples.fastapi_server:create_app

The test suite runs this very file (``tests/test_example_fastapi.py``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agents import TResponseInputItem
from chatkit.agents import ThreadItemConverter
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    Attachment,
    ImageAttachment,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types.responses import ResponseInputContentParam

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.asgi import attachment_routes

PUBLIC_URL = os.environ.get("PUBLIC_URL", "http://127.0.0.1:8000")
"""Where clients reach this server: attachment upload and preview URLs start with it."""
HISTORY = 20
"""How many recent items of the thread the model sees."""


@dataclass(frozen=True)
class RequestContext:
    """What ChatKit hands to every store call; MongoStore scopes all data by ``user_id``."""

    user_id: str


def request_context(request: Request) -> RequestContext:
    """Who the request acts for. Replace with your authentication (a session, a JWT...)."""
    user_id = request.headers.get("X-User-Id", "").strip()
    if not user_id:
        raise HTTPException(401, "send X-User-Id (stands in for real authentication)")
    return RequestContext(user_id)


class GridFSConverter(ThreadItemConverter):
    """Feeds attachments to the model as data URLs, read from GridFS for this request's user.

    Built per request because ``attachment_to_message_content`` receives no context.
    """

    def __init__(
        self, attachments: GridFSAttachmentStore[RequestContext], context: RequestContext
    ) -> None:
        self.attachments = attachments
        self.context = context

    async def attachment_to_message_content(
        self, attachment: Attachment
    ) -> ResponseInputContentParam:
        data = await self.attachments.read_bytes(attachment.id, self.context)
        url = f"data:{attachment.mime_type};base64,{base64.b64encode(data).decode()}"
        if isinstance(attachment, ImageAttachment):
            return {"type": "input_image", "detail": "auto", "image_url": url}
        return {"type": "input_file", "filename": attachment.name, "file_data": url}


class Assistant(ChatKitServer[RequestContext]):
    """Answers from the model input the converter builds. ``answer`` stands in for a model
    call (e.g. ``Runner.run_streamed`` of the agents SDK with ``stream_agent_response``)."""

    def __init__(
        self, store: MongoStore[RequestContext], attachments: GridFSAttachmentStore[RequestContext]
    ) -> None:
        super().__init__(store, attachments)
        self.attachments = attachments

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        recent = await self.store.load_thread_items(thread.id, None, HISTORY, "desc", context)
        converter = GridFSConverter(self.attachments, context)
        model_input = await converter.to_agent_input(list(reversed(recent.data)))
        words = answer(model_input).split(" ")
        reply = AssistantMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=[],
        )
        yield ThreadItemAddedEvent(item=reply)
        for index, word in enumerate(words):
            delta = word if index == 0 else f" {word}"
            update = AssistantMessageContentPartTextDelta(content_index=0, delta=delta)
            yield ThreadItemUpdatedEvent(item_id=reply.id, update=update)
        content = AssistantMessageContent(text=" ".join(words))
        yield ThreadItemDoneEvent(item=reply.model_copy(update={"content": [content]}))


def answer(model_input: list[TResponseInputItem]) -> str:
    """The stand-in model: repeats the last user message and says what reached it."""
    last: Any = next(item for item in reversed(model_input) if item.get("role") == "user")
    parts = last["content"] if isinstance(last["content"], list) else []
    text = " ".join(p["text"] for p in parts if p.get("type") == "input_text").strip()
    seen = [
        f"{p.get('filename', 'an image')} ({len(_decoded(p))} bytes)"
        for p in parts
        if p.get("type") in ("input_file", "input_image")
    ]
    return f"You said: {text}" + (f" I received {', '.join(seen)}." if seen else "")


def _decoded(part: Any) -> bytes:
    url = part.get("file_data") or part.get("image_url")
    return base64.b64decode(url.split(",", 1)[1])


def create_app(store: MongoStore[RequestContext] | None = None) -> FastAPI:
    """The application; without ``store``, one on ``MONGODB_URI`` (the client connects on
    first use, so nothing is contacted before start-up)."""
    store = store or MongoStore.from_uri(
        os.environ["MONGODB_URI"], database=os.environ.get("MONGODB_DATABASE", "chatkit")
    )
    files = attachments(store)
    server = Assistant(store, files)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.ensure_indexes()  # or MongoStore(..., auto_create_indexes=True) on first use
        yield
        await store.close()  # closes the client from_uri made; a client you passed stays open

    app = FastAPI(lifespan=lifespan)

    @app.post("/chatkit")
    async def chatkit_endpoint(request: Request) -> Response:
        context = request_context(request)
        try:
            result = await server.process(await request.body(), context)
        except NotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except ValueError as exc:  # not a ChatKit request, or data the store refuses
            return JSONResponse({"error": str(exc)}, status_code=400)
        if isinstance(result, StreamingResult):
            return StreamingResponse(result, media_type="text/event-stream")
        return Response(content=result.json, media_type="application/json")

    # POST /attachments (direct), POST /attachments/{id}/upload (two-phase), GET /attachments/{id}:
    # each acts for the user request_context authenticates, never one named in the request.
    app.router.routes.extend(attachment_routes(files, context=request_context))
    return app


def attachments(store: MongoStore[RequestContext]) -> GridFSAttachmentStore[RequestContext]:
    """Attachment bytes in GridFS beside the conversation, served by this app's routes."""
    return GridFSAttachmentStore(
        store,
        upload_url=lambda attachment_id, _: f"{PUBLIC_URL}/attachments/{attachment_id}/upload",
        preview_url=lambda attachment_id, _: f"{PUBLIC_URL}/attachments/{attachment_id}",
        max_bytes=20 * 1024 * 1024,
    )
