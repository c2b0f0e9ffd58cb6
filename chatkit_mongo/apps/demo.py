"""A demo ChatKit server on MongoStore that needs no model, no key and no database.

``POST /chatkit`` takes ChatKit's requests and answers as ChatKit's docs show: streaming
requests as server-sent events, the others as JSON. The responder echoes each message
word by word and names its attachments, so streaming, persistence and attachments can
all be watched with curl. Each request acts for the user named by the ``X-User-Id``
header (a fixed demo user when absent), so two users can be shown to be kept apart.

What it logs, one line each at INFO: every write to the store (threads, items,
attachment metadata) and to the attachment store (the bytes of every upload, direct or
two-phase, and their removal), and every refused request with its status and reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Generic

import uvicorn
from chatkit.errors import ErrorCode
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import AttachmentStore, NotFoundError, Store, StoreItemType
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageContentPartDone,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    Attachment,
    ErrorEvent,
    Page,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    UserMessageTextContent,
)
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import TypeVar

from .._text import shown
from ..asgi import attachment_routes
from ..attachments import GridFSAttachmentStore, UploadData
from ..owner import MAX_OWNER_LENGTH, default_owner
from ..store import MongoStore
from ._extras import missing_extra
from .connection import Connection

TContext = TypeVar("TContext", default=Any)

DEMO_USER: Final = "demo-user"
"""Who a request acts for when it names no user."""
USER_HEADER: Final = "X-User-Id"
CHATKIT_PATH: Final = "/chatkit"
ATTACHMENTS_PATH: Final = "/attachments"
DEMO_MAX_BYTES: Final = 16 * 1024 * 1024
"""The largest attachment the demo accepts."""
MAX_REQUEST_BYTES: Final = 1024 * 1024
"""The largest ChatKit request body ``/chatkit`` reads: messages and ids are small, and
files go through the attachment routes, so anything larger is refused (413) unread."""
DEFAULT_WORD_DELAY: Final = 0.05
"""Seconds between streamed words when serving, slow enough to watch the stream."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoContext:
    """The request context ChatKit passes to every Store call; MongoStore reads ``user_id``."""

    user_id: str


def context_from_headers(headers: Mapping[str, str]) -> DemoContext:
    """The user named by ``X-User-Id``, or the demo user; ``ValueError`` for an unusable one.

    Why refuse a blank or huge header rather than fall back to the demo user: a client
    that meant to name a user would otherwise silently read and write the demo user's data.
    """
    value = headers.get(USER_HEADER)
    if value is None:
        return DemoContext(DEMO_USER)
    user_id = value.strip()
    if not user_id:
        raise ValueError(f"the {USER_HEADER} header is blank; leave it out to act as {DEMO_USER}")
    if len(user_id) > MAX_OWNER_LENGTH:
        raise ValueError(
            f"the {USER_HEADER} header is {len(user_id)} characters long; "
            f"at most {MAX_OWNER_LENGTH}"
        )
    return DemoContext(user_id)


class LoggedStore(Store[TContext], Generic[TContext]):
    """Any Store, with each write logged at INFO: what was stored, where, and for whom.

    Why a wrapper and not a MongoStore subclass: the demo shows what ChatKit asks of a
    store, whichever store it is given, and the store itself stays free of demo logging.
    """

    def __init__(self, store: Store[TContext]) -> None:
        self.inner: Final = store

    def generate_thread_id(self, context: TContext) -> str:
        return self.inner.generate_thread_id(context)

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: TContext
    ) -> str:
        return self.inner.generate_item_id(item_type, thread, context)

    async def load_thread(self, thread_id: str, context: TContext) -> ThreadMetadata:
        return await self.inner.load_thread(thread_id, context)

    async def save_thread(self, thread: ThreadMetadata, context: TContext) -> None:
        await self.inner.save_thread(thread, context)
        _log(context, "saved thread %s (title %r)", thread.id, thread.title)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: TContext
    ) -> Page[ThreadItem]:
        return await self.inner.load_thread_items(thread_id, after, limit, order, context)

    async def save_attachment(self, attachment: Attachment, context: TContext) -> None:
        await self.inner.save_attachment(attachment, context)
        _log(
            context,
            "saved attachment %s %r (thread %s)",
            attachment.id,
            attachment.name,
            attachment.thread_id,
        )

    async def load_attachment(self, attachment_id: str, context: TContext) -> Attachment:
        return await self.inner.load_attachment(attachment_id, context)

    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        found = await _exists(self.inner.load_attachment(attachment_id, context))
        await self.inner.delete_attachment(attachment_id, context)
        if found:
            _log(context, "deleted attachment %s", attachment_id)
        else:
            _log(context, "attachment %s not found for this user: nothing deleted", attachment_id)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: TContext
    ) -> Page[ThreadMetadata]:
        return await self.inner.load_threads(limit, after, order, context)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        await self.inner.add_thread_item(thread_id, item, context)
        _log(context, "added %s %s to thread %s", item.type, item.id, thread_id)

    async def save_item(self, thread_id: str, item: ThreadItem, context: TContext) -> None:
        await self.inner.save_item(thread_id, item, context)
        _log(context, "saved %s %s in thread %s", item.type, item.id, thread_id)

    async def load_item(self, thread_id: str, item_id: str, context: TContext) -> ThreadItem:
        return await self.inner.load_item(thread_id, item_id, context)

    async def delete_thread(self, thread_id: str, context: TContext) -> None:
        found = await _exists(self.inner.load_thread(thread_id, context))
        await self.inner.delete_thread(thread_id, context)
        if found:
            _log(context, "deleted thread %s with its items and attachments", thread_id)
        else:
            _log(context, "thread %s not found for this user: nothing deleted", thread_id)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: TContext) -> None:
        found = await _exists(self.inner.load_item(thread_id, item_id, context))
        await self.inner.delete_thread_item(thread_id, item_id, context)
        if found:
            _log(context, "deleted item %s of thread %s", item_id, thread_id)
        else:
            _log(
                context,
                "item %s of thread %s not found for this user: nothing deleted",
                item_id,
                thread_id,
            )


async def _exists(load: Any) -> bool:
    """Whether a load finds its document: read before a delete, so the log can say whether
    anything was there to delete (a delete of what is missing is no error in ChatKit)."""
    try:
        await load
    except NotFoundError:
        return False
    return True


def _log(context: Any, message: str, *args: object) -> None:
    """One INFO line for the context's user; one line whatever the ids a client sent (an
    id may hold a newline, which would otherwise start a forged line of its own)."""
    logger.info("%s", _one_line(f"[user {default_owner(context)}] {message % args}"))


def _log_upload(context: Any, attachment: Attachment) -> None:
    _log(
        context,
        "stored the upload of attachment %s %r (%s)",
        attachment.id,
        attachment.name,
        attachment.mime_type,
    )


def _one_line(text: str) -> str:
    """``text`` with every run of whitespace, line breaks included, as one space."""
    return " ".join(text.split())


def echo_reply(message: UserMessageItem) -> str:
    """What the demo answers: the message's text, and the names of its attachments."""
    text = " ".join(
        part.text.strip() for part in message.content if isinstance(part, UserMessageTextContent)
    ).strip()
    reply = f"You said: {text}" if text else "You sent no text."
    if message.attachments:
        names = ", ".join(repr(attachment.name) for attachment in message.attachments)
        count = len(message.attachments)
        reply += f" You attached {count} file{'s' if count > 1 else ''}: {names}."
    return reply


class EchoServer(ChatKitServer[DemoContext]):
    """A ChatKit server whose responder streams :func:`echo_reply`, one word per event."""

    def __init__(
        self,
        store: Store[DemoContext],
        attachment_store: AttachmentStore[DemoContext] | None = None,
        *,
        word_delay: float = 0.0,
    ) -> None:
        super().__init__(store, attachment_store)
        self.word_delay = word_delay

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: DemoContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        if input_user_message is None:
            return
        words = echo_reply(input_user_message).split(" ")
        item = AssistantMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=[],
        )
        yield ThreadItemAddedEvent(item=item)
        yield ThreadItemUpdatedEvent(
            item_id=item.id,
            update=AssistantMessageContentPartAdded(
                content_index=0, content=AssistantMessageContent(text="")
            ),
        )
        for index, word in enumerate(words):
            if self.word_delay:
                await asyncio.sleep(self.word_delay)
            yield ThreadItemUpdatedEvent(
                item_id=item.id,
                update=AssistantMessageContentPartTextDelta(
                    content_index=0, delta=word if index == 0 else f" {word}"
                ),
            )
        content = AssistantMessageContent(text=" ".join(words))
        yield ThreadItemUpdatedEvent(
            item_id=item.id,
            update=AssistantMessageContentPartDone(content_index=0, content=content),
        )
        yield ThreadItemDoneEvent(item=item.model_copy(update={"content": [content]}))


class LoggedAttachmentStore(GridFSAttachmentStore[TContext], Generic[TContext]):
    """The GridFS attachment store, with each write of bytes logged at INFO.

    Why a subclass, where the metadata store is wrapped: the upload routes need the
    GridFS store itself (they stream into it), and its own writes never pass through the
    metadata store's API, so :class:`LoggedStore` does not see them. Bytes are written
    by ``upload`` (a two-phase upload's second phase) and by ``create_and_upload`` (a
    direct upload, which writes its metadata in the same call, without ``upload``), so
    both are logged.
    """

    async def upload(self, attachment_id: str, data: UploadData, context: TContext) -> Attachment:
        attachment = await super().upload(attachment_id, data, context)
        _log_upload(context, attachment)
        return attachment

    async def create_and_upload(
        self, name: str, mime_type: str, data: UploadData, context: TContext
    ) -> Attachment:
        attachment = await super().create_and_upload(name, mime_type, data, context)
        _log_upload(context, attachment)
        return attachment

    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        await super().delete_attachment(attachment_id, context)
        _log(context, "removed the bytes of attachment %s, if this user had any", attachment_id)


def demo_attachment_store(store: MongoStore[Any], base_url: str) -> LoggedAttachmentStore[Any]:
    """Attachment bytes in the store's GridFS bucket, served by the demo's own routes."""
    return LoggedAttachmentStore(
        store,
        upload_url=lambda attachment_id, _: f"{base_url}{ATTACHMENTS_PATH}/{attachment_id}/upload",
        preview_url=lambda attachment_id, _: f"{base_url}{ATTACHMENTS_PATH}/{attachment_id}",
        max_bytes=DEMO_MAX_BYTES,
    )


def create_app(
    store: Store[DemoContext],
    attachment_store: AttachmentStore[DemoContext] | None = None,
    *,
    routes: Sequence[BaseRoute] = (),
    word_delay: float = 0.0,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> Starlette:
    """The demo's ASGI app: ``POST /chatkit`` on an :class:`EchoServer` over ``store``.

    ``attachment_store`` and ``routes`` (its upload and download routes) are the one
    place where attachment support is plugged in; without them ChatKit's
    ``attachments.*`` requests are answered 501, everything else works.
    """
    quiet_expected_errors()
    server = EchoServer(LoggedStore(store), attachment_store, word_delay=word_delay)

    async def chatkit_endpoint(request: Request) -> Response:
        try:
            body = await read_body(request, max_request_bytes)
            context = context_from_headers(request.headers)
            result = await server.process(body, context)
            if isinstance(result, StreamingResult):
                return await _event_stream(result, server.store, body, context)
            return Response(result.json, media_type="application/json")
        except RequestTooLarge as exc:
            return _error(413, str(exc))
        except ValidationError as exc:
            return _error(400, f"not a valid ChatKit request: {_first_error(exc)}")
        except NotFoundError as exc:
            return _error(404, str(exc))
        except ValueError as exc:  # OwnerError, UnstorableError, bad ids and limits
            return _error(400, str(exc))
        except NotImplementedError as exc:  # input.transcribe, widget actions
            return _error(501, f"this server does not support that request: {exc}")
        except RuntimeError as exc:
            if server.attachment_store is None:
                return _error(501, "this server has no attachment store")
            logger.exception("request failed")
            return _error(500, f"internal error: {exc}")

    return Starlette(
        routes=[Route(CHATKIT_PATH, chatkit_endpoint, methods=["POST"]), *routes],
        middleware=[Middleware(LoggedRefusals)],
    )


_MOST_REASON_BYTES: Final = 4096
"""The most of a refusal's body kept for its log line (the demo's are one short sentence)."""


class LoggedRefusals:
    """ASGI middleware: every answer of 400 or more logged with its reason, one line.

    Why at the edge, for every route: refusals are made in several places (the ChatKit
    endpoint, the attachment routes of :mod:`chatkit_mongo.asgi`, Starlette's own 404
    and 405), and the client reads the reason in the body; here it is read from that
    very body (the ``error`` field of the JSON, else the text), so the log says what the
    client was told. 4xx at INFO (the request was wrong, the server is fine), 5xx at
    WARNING (an unexpected 500 has its traceback logged where it happened).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                body.extend(message.get("body", b"")[: _MOST_REASON_BYTES - len(body)])
                if not message.get("more_body", False):
                    _log_refusal(scope, status, bytes(body))
            await send(message)

        await self.app(scope, receive, sending)


def _log_refusal(scope: Scope, status: int, body: bytes) -> None:
    text = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    reason = parsed["error"] if isinstance(parsed, dict) and "error" in parsed else text
    reason = str(reason).strip() or "(no reason given)"
    try:
        user = context_from_headers(Headers(scope=scope)).user_id
    except ValueError:  # the header itself was the reason: shown, kept short
        user = shown(Headers(scope=scope).get(USER_HEADER, ""))
    line = f"[user {user}] {scope['method']} {scope['path']} refused {status}: {reason}"
    # The path is decoded: a %0A in the URL would otherwise start a line of its own.
    logger.log(logging.INFO if status < 500 else logging.WARNING, "%s", _one_line(line))


class RequestTooLarge(Exception):
    """The request body is over the limit; nothing of it was parsed."""


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, counted as it streams in: refused past ``max_bytes`` before ChatKit
    parses anything. Why count and not only trust Content-Length: a chunked body has
    none, and a client may send more than it declares."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RequestTooLarge(f"the request body is {declared} bytes; at most {max_bytes}")
    received = bytearray()
    async for piece in request.stream():
        received += piece
        if len(received) > max_bytes:
            raise RequestTooLarge(f"the request body is over {max_bytes} bytes")
    return bytes(received)


_EXPECTED: Final = (NotFoundError, ValueError, NotImplementedError)


class _ExpectedErrorsLoggedByTheDemo(logging.Filter):
    """ChatKit logs every failed stream with a traceback; the failures a request can
    cause (a missing thread, bad input, an unsupported request) are logged by the demo
    instead, in one line: as the refusal it answers (:class:`LoggedRefusals`), or as the
    error event that ends a stream already started. So ChatKit's record is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, _EXPECTED)


def quiet_expected_errors() -> None:
    """Install :class:`_ExpectedErrorsLoggedByTheDemo` on ChatKit's logger, once."""
    chatkit_logger = logging.getLogger("chatkit")
    if not any(isinstance(f, _ExpectedErrorsLoggedByTheDemo) for f in chatkit_logger.filters):
        chatkit_logger.addFilter(_ExpectedErrorsLoggedByTheDemo())


async def _event_stream(
    result: StreamingResult, store: Store[DemoContext], body: bytes, context: DemoContext
) -> StreamingResponse:
    """The stream as ``text/event-stream``, read ahead until the user's message is stored.

    Why read ahead: ChatKit creates the thread, then stores the message; a failure
    before the message is stored (a missing thread or attachment, a message the store
    refuses) is answered with a plain HTTP error, and a thread this request created is
    removed again, so a refused first message leaves no empty thread behind. A failure
    after that point ends the stream with ChatKit's error event.
    """
    events = aiter(result)
    ahead: list[bytes] = []
    created: str | None = None
    try:
        while (event := await anext(events, None)) is not None:
            ahead.append(event)
            parsed = json.loads(event.removeprefix(b"data: "))
            if parsed.get("type") != "thread.created":
                break
            created = parsed["thread"]["id"]
    except Exception:
        if created is not None:
            await _remove_created_thread(store, created, body, context)
        raise

    async def stream() -> AsyncIterator[bytes]:
        for event in ahead:
            yield event
        try:
            async for event in events:
                yield event
        except Exception as exc:  # the response has started: report in-band, then stop
            if isinstance(exc, _EXPECTED):
                _log(context, "stream ended by an error event: %s: %s", type(exc).__name__, exc)
            else:
                logger.exception("stream failed")
            error = ErrorEvent(code=ErrorCode.STREAM_ERROR, message=str(exc), allow_retry=False)
            yield b"data: " + error.model_dump_json(exclude_none=True).encode() + b"\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


async def _remove_created_thread(
    store: Store[DemoContext], thread_id: str, body: bytes, context: DemoContext
) -> None:
    """Undo a ``threads.create`` whose first message was refused.

    ChatKit links the message's attachments to the new thread before storing the
    message; they are unlinked first, so deleting the thread keeps the user's uploads.
    """
    params = json.loads(body).get("params", {})
    for attachment_id in params.get("input", {}).get("attachments", []):
        try:
            attachment = await store.load_attachment(attachment_id, context)
        except NotFoundError:
            continue
        if attachment.thread_id == thread_id:
            unlinked = attachment.model_copy(update={"thread_id": None})
            await store.save_attachment(unlinked, context)
    await store.delete_thread(thread_id, context)
    _log(context, "removed thread %s: its first message was refused", thread_id)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


def print_spans() -> None:
    """Make the process's tracer provider one that prints each span, as one line of
    JSON on standard error, as it ends: ``serve --otel-console``. Needs the SDK (the
    ``demo`` extra installs it); an application picks its own exporter instead (see
    the docs' Observability page)."""
    try:
        from opentelemetry import trace  # noqa: PLC0415  (only with --otel-console)
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError as exc:
        raise missing_extra("--otel-console (the OpenTelemetry SDK)", "demo", exc) from exc
    provider = TracerProvider()
    exporter = ConsoleSpanExporter(
        out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n"
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def serve(
    connection: Connection, *, embedded: bool, host: str, port: int, word_delay: float
) -> None:
    """Run the demo server until stopped: on ``connection``'s database, or (``embedded``)
    on an in-memory one of the same name. Indexes are created on start.

    Everything runs on one event loop: a PyMongo async client belongs to its loop.
    Why the embedded backend is imported only here: on a server (``--uri``) the demo
    needs no test double installed.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def main() -> None:
        if embedded:
            try:
                from .embedded import embedded_database  # noqa: PLC0415  (see the docstring)
            except ImportError as exc:
                raise missing_extra(
                    "without --uri the demo runs on the embedded backend, which", "demo", exc
                ) from exc
            with embedded_database(connection.database) as database:
                logger.info(
                    "backend: embedded in-memory database %r (no --uri given; gone when stopped)",
                    connection.database,
                )
                store: MongoStore[Any] = MongoStore(database, collections=connection.collections)
                await _run(store, host, port, word_delay)
            return
        async with connection.open() as database:
            logger.info("backend: MongoDB database %r", database.name)
            await _run(
                MongoStore(database, collections=connection.collections), host, port, word_delay
            )

    asyncio.run(main())


async def _run(store: MongoStore[Any], host: str, port: int, word_delay: float) -> None:
    for status in await store.ensure_indexes():
        logger.info("index %s", status.describe())
    base = f"http://{host}:{port}"
    attachments = demo_attachment_store(store, base)
    routes = attachment_routes(
        attachments, context=lambda request: context_from_headers(request.headers)
    )
    app = create_app(store, attachments, routes=routes, word_delay=word_delay)
    logger.info("ChatKit endpoint: POST %s%s", base, CHATKIT_PATH)
    logger.info(
        "attachments: POST %s%s (multipart 'file'), GET %s%s/{id}",
        base,
        ATTACHMENTS_PATH,
        base,
        ATTACHMENTS_PATH,
    )
    await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info")).serve()
