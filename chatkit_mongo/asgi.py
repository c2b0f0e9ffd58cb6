"""HTTP routes for :class:`~chatkit_mongo.GridFSAttachmentStore` (Starlette, extra ``http``).

Why Starlette: FastAPI, which ChatKit's docs use, is built on it, so these routes mount
in either. The application maps a request to its ChatKit context (``context``), so
every route acts for the owner the application authenticated, never for one named in
the request.

Why the body is never spooled: every upload streams into the store as it arrives and is
counted while it does, whatever its transfer encoding, so a request holds at most one
piece of its body, one multipart part's headers and the GridFS chunk being filled, and
is refused (413, nothing kept) once it passes ``max_bytes``. A multipart body is parsed
by python-multipart's push parser, not by Starlette's form parser, which writes a file
part to a temporary file whole before the route sees it.

Answers: 404 for missing and foreign ids alike (nothing tells them apart), 413 for too
large, 415 for a refused MIME type (the file's, or a direct upload's body that is not
``multipart/form-data``), 409 for a second upload, 403 for a context with no owner, 400
for other bad input, a malformed multipart body included, 503 (with ``Retry-After``)
when the database could not be reached: the request may be sent again as it was.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from chatkit.store import NotFoundError
from chatkit.types import Attachment
from pymongo.errors import ConnectionFailure
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ._driver import maybe_await
from .attachments import GridFSAttachmentStore
from .errors import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    OwnerError,
    UploadConflictError,
)

ContextFor = Callable[[Request], Any]
"""``request -> ChatKit context`` (may be async); raise an HTTPException to refuse."""

INLINE_MIME_TYPES: Final = frozenset(
    {
        "image/png",
        "image/apng",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
    }
)
"""The raster image types served ``inline``; every other type is served as a download.

Why an allow-list: a browser only ever draws these as a picture, while it renders SVG
and every other ``+xml`` type as an XML document (which can carry XHTML script), runs
HTML and script types, and opens PDF in a viewer. A type not listed here, however
harmless, is downloaded rather than guessed at."""
MULTIPART_ALLOWANCE: Final = 64 * 1024
"""Room above ``max_bytes`` for a multipart body's envelope: boundaries, part headers
and small non-file fields. A multipart body is refused once it passes the sum."""
PART_HEADERS_LIMIT: Final = 8 * 1024
"""The most header bytes (names and values) one multipart part may carry: they are the
only part of a body held until they end."""
_MAX_BOUNDARY: Final = 70
"""RFC 2046 section 5.1.1: a boundary is 1 to 70 characters."""
_DEFAULT_FILE_TYPE: Final = "application/octet-stream"
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._ -]")
_RETRY_AFTER: Final = "1"
"""Seconds a client waits before sending a request that met a network fault again:
past PyMongo's paused-pool window (``_retry``)."""
_ERRORS: Final[tuple[tuple[type[Exception], int], ...]] = (
    (NotFoundError, 404),
    (AttachmentTooLargeError, 413),
    (AttachmentTypeError, 415),
    (UploadConflictError, 409),
    (OwnerError, 403),
    (ValueError, 400),
    (TypeError, 400),
)


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """A ``Content-Type`` value as its bare ``type/subtype`` and its parameters.

    Type, subtype and parameter names come back lower-case (they are case-insensitive,
    RFC 9110 section 8.3.1), quoted parameter values unquoted, and a ``;`` inside a
    quoted value does not split it. Why python-multipart's ``parse_options_header``: the
    routes already depend on python-multipart for the body, and it is the parser
    Starlette itself uses for this header; the stdlib ``email`` parser would apply mail
    rules HTTP does not have (RFC 2231 continuations, a ``text/plain`` default).
    """
    kind, parameters = parse_options_header(value)
    return kind.decode("latin-1"), {
        name.decode("latin-1"): text.decode("latin-1") for name, text in parameters.items()
    }


def attachment_routes(
    attachments: GridFSAttachmentStore[Any], *, context: ContextFor, path: str = "/attachments"
) -> list[BaseRoute]:
    """Routes for ``attachments`` under ``path``:

    * ``POST {path}``: direct upload, ``multipart/form-data`` with a ``file`` field;
      answers the Attachment JSON.
    * ``POST {path}/{attachment_id}/upload``: two-phase upload target (point
      ``upload_url`` here); multipart with a ``file`` field, or the raw bytes as body.
    * ``GET {path}/{attachment_id}``: the bytes, streamed (point ``preview_url`` here);
      only :data:`INLINE_MIME_TYPES` are served ``inline``.
    """
    max_bytes = attachments.max_bytes

    async def create(request: Request) -> Response:
        kind, parameters = media_type(request.headers.get("content-type", ""))
        if kind != "multipart/form-data":
            return _error(
                415,
                'send the file as a multipart/form-data field named "file", '
                f"not as {kind or 'a body without a Content-Type'}",
            )
        too_large = _refuse_oversized(request, max_bytes, multipart=True)
        if too_large is not None:
            return too_large
        owner_context = await maybe_await(context(request))
        file = await _MultipartFile.open(request.stream(), parameters, max_bytes)
        async with aclosing(file.data):
            attachment = await attachments.create_and_upload(
                file.name, file.mime_type, file.data, owner_context
            )
        return _attachment_response(attachment)

    async def upload(request: Request) -> Response:
        kind, parameters = media_type(request.headers.get("content-type", ""))
        multipart = kind == "multipart/form-data"
        too_large = _refuse_oversized(request, max_bytes, multipart=multipart)
        if too_large is not None:
            return too_large
        owner_context = await maybe_await(context(request))
        attachment_id = request.path_params["attachment_id"]
        if not multipart:
            # The store counts the raw bytes against max_bytes as each piece arrives.
            attachment = await attachments.upload(attachment_id, request.stream(), owner_context)
            return _attachment_response(attachment)
        file = await _MultipartFile.open(request.stream(), parameters, max_bytes)
        async with aclosing(file.data):
            attachment = await attachments.upload(attachment_id, file.data, owner_context)
        return _attachment_response(attachment)

    async def download(request: Request) -> Response:
        owner_context = await maybe_await(context(request))
        found = await attachments.open_download(request.path_params["attachment_id"], owner_context)
        mime_type = found.attachment.mime_type
        inline = media_type(mime_type)[0] in INLINE_MIME_TYPES
        headers = {
            "Content-Length": str(found.length),
            "Content-Disposition": _disposition(
                "inline" if inline else "attachment", found.attachment.name
            ),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
        }
        return StreamingResponse(found.chunks, media_type=mime_type, headers=headers)

    return [
        Route(path, _answering_errors(create), methods=["POST"], name="attachment_create"),
        Route(
            f"{path}/{{attachment_id}}/upload",
            _answering_errors(upload),
            methods=["POST"],
            name="attachment_upload",
        ),
        Route(
            f"{path}/{{attachment_id}}",
            _answering_errors(download),
            methods=["GET"],
            name="attachment_download",
        ),
    ]


@dataclass(frozen=True)
class _FilePart:
    """The ``file`` part of a multipart body: its name, bare MIME type and bytes."""

    name: str
    mime_type: str
    data: AsyncGenerator[bytes]


class _MultipartFile:
    """Streams the ``file`` field of a ``multipart/form-data`` body as it arrives.

    Each piece of the body is pushed through python-multipart's ``MultipartParser``: the
    ``file`` part's bytes are handed on (the store counts them against ``max_bytes``),
    every other part's bytes are dropped as they are parsed, and the whole body is
    counted against ``max_bytes + MULTIPART_ALLOWANCE``. What is held at any time: one
    piece of the body, the file bytes parsed from it, and the headers of one part (at
    most ``PART_HEADERS_LIMIT`` bytes).

    The file's bytes end only once the whole form has arrived well-formed, so a second
    ``file`` field, a missing closing boundary or an oversized tail fails the upload
    while the store can still throw away what it received.
    """

    def __init__(self, body: AsyncIterator[bytes], boundary: str, max_bytes: int) -> None:
        self._body = body
        self._limit = max_bytes + MULTIPART_ALLOWANCE
        self._received = 0
        self._parser = MultipartParser(
            boundary.encode("latin-1"),
            {
                "on_part_begin": self._on_part_begin,
                "on_header_begin": self._on_header_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )
        self._headers: list[tuple[bytearray, bytearray]] = []
        self._header_bytes = 0
        self._in_file = False
        self._file: tuple[str, str] | None = None
        self._file_ended = False
        self._ended = False
        self._parsed: list[bytes] = []

    @classmethod
    async def open(
        cls, body: AsyncIterator[bytes], parameters: dict[str, str], max_bytes: int
    ) -> _FilePart:
        """Read the body up to the end of the ``file`` part's headers."""
        boundary = parameters.get("boundary", "")
        if not 0 < len(boundary) <= _MAX_BOUNDARY:
            raise ValueError(
                "multipart/form-data needs a boundary parameter of 1 to "
                f"{_MAX_BOUNDARY} characters, got {boundary!r:.100}"
            )
        return await cls(body, boundary, max_bytes).file_part()

    async def file_part(self) -> _FilePart:
        """The ``file`` part: its name, its type and its bytes as they arrive."""
        while self._file is None:
            if self._ended or not await self._feed():
                raise ValueError('send the file as a multipart/form-data field named "file"')
        name, mime_type = self._file
        return _FilePart(name, mime_type, self._file_bytes())

    async def _file_bytes(self) -> AsyncGenerator[bytes]:
        while True:
            parsed, self._parsed = self._parsed, []
            for piece in parsed:
                yield piece
            if self._file_ended:
                break
            if not await self._feed():
                raise ValueError("the multipart body ended inside the file part")
        while not self._ended:
            if not await self._feed():
                raise ValueError("the multipart body ended before its closing boundary")

    async def _feed(self) -> bool:
        """Parse the body's next piece; False once the body has ended."""
        piece = await anext(self._body, None)
        if piece is None:
            return False
        self._received += len(piece)
        if self._received > self._limit:
            raise AttachmentTooLargeError(
                f"the multipart body passed {self._limit} bytes: max_bytes plus "
                f"{MULTIPART_ALLOWANCE} for its boundaries, headers and other fields"
            )
        try:
            self._parser.write(piece)
        except MultipartParseError as exc:
            raise ValueError(f"malformed multipart body: {exc}") from None
        return True

    # ---------------------------------------------------------------- parser callbacks

    def _on_part_begin(self) -> None:
        self._headers = []
        self._header_bytes = 0

    def _on_header_begin(self) -> None:
        self._headers.append((bytearray(), bytearray()))

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_text(0, data[start:end])

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_text(1, data[start:end])

    def _header_text(self, index: int, text: bytes) -> None:
        self._header_bytes += len(text)
        if self._header_bytes > PART_HEADERS_LIMIT:
            raise ValueError(f"a multipart part's headers pass {PART_HEADERS_LIMIT} bytes")
        self._headers[-1][index].extend(text)

    def _on_headers_finished(self) -> None:
        headers = {bytes(name).lower(): bytes(value) for name, value in self._headers}
        self._headers = []
        disposition, parameters = parse_options_header(headers.get(b"content-disposition"))
        if disposition != b"form-data" or parameters.get(b"name") != b"file":
            return
        if self._file is not None:
            raise ValueError('the form has more than one "file" field; send one per request')
        try:
            name = parameters.get(b"filename", b"file").decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the file's name is not UTF-8") from None
        declared = media_type(headers.get(b"content-type", b"").decode("latin-1"))[0]
        self._file = (name or "file", declared or _DEFAULT_FILE_TYPE)
        self._in_file = True

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._parsed.append(data[start:end])

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self._file_ended = True

    def _on_end(self) -> None:
        self._ended = True


def _answering_errors(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except NotFoundError:
            return _error(404, "attachment not found")
        except ClientDisconnect:
            # Nobody reads this answer; the store has already thrown the bytes away.
            return _error(400, "the client disconnected before the body ended")
        except (ValueError, TypeError, UploadConflictError) as exc:
            status = next(code for kind, code in _ERRORS if isinstance(exc, kind))
            return _error(status, str(exc))
        except ConnectionFailure:
            # Why 503 and not the driver's words: every route is safe to send again
            # (see docs/attachments.md), which 503 with Retry-After tells a client; the
            # driver's message names the database's host, which is not the client's.
            response = _error(503, "the database did not answer in time; send it again")
            response.headers["Retry-After"] = _RETRY_AFTER
            return response

    return answer


def _refuse_oversized(request: Request, max_bytes: int, *, multipart: bool) -> Response | None:
    """413 before reading a body whose Content-Length already passes what may arrive.

    Only a shortcut: a body without Content-Length, or one longer than it says, is
    refused by the counting while it streams.
    """
    limit, why = (
        (max_bytes + MULTIPART_ALLOWANCE, f"max_bytes plus {MULTIPART_ALLOWANCE} for multipart")
        if multipart
        else (max_bytes, "max_bytes")
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _error(413, f"the request body is {declared} bytes; at most {limit} ({why})")
    return None


def _disposition(kind: str, name: str) -> str:
    """An ASCII fallback and the exact UTF-8 name (RFC 6266), neither able to break out."""
    fallback = _UNSAFE_NAME.sub("_", name).strip(" .") or "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _attachment_response(attachment: Attachment) -> Response:
    """The Attachment as ChatKit's server serialises it: integration-only ``metadata``
    and unset fields left out, so nothing meant for the server reaches the client."""
    body = attachment.model_dump_json(
        by_alias=True, exclude_none=True, context={"exclude_metadata": True}
    )
    return Response(body, media_type="application/json")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
