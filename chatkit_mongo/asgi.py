"""HTTP routes for :class:`~chatkit_mongo.GridFSAttachmentStore` (Starlette, extra ``http``).

Why Starlette: FastAPI, which ChatKit's docs use, is built on it, so these routes mount
in either. The application maps a request to its ChatKit context (``context``), so
every route acts for the owner the application authenticated, never for one named in
the request.

Answers: 404 for missing and foreign ids alike (nothing tells them apart), 413 for too
large, 415 for a refused MIME type, 409 for a second upload, 403 for a context with no
owner, 400 for other bad input.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import quote

from chatkit.store import NotFoundError
from chatkit.types import Attachment
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ._driver import resolve
from .attachments import GridFSAttachmentStore, UploadData
from .errors import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    OwnerError,
    UploadConflictError,
)

ContextFor = Callable[[Request], Any]
"""``request -> ChatKit context`` (may be async); raise an HTTPException to refuse."""

_MULTIPART_ALLOWANCE: Final = 64 * 1024
"""Room for multipart boundaries and headers above ``max_bytes`` in a request body."""
_UNSAFE_NAME: Final = re.compile(r"[^A-Za-z0-9._ -]")
_ERRORS: Final[tuple[tuple[type[Exception], int], ...]] = (
    (NotFoundError, 404),
    (AttachmentTooLargeError, 413),
    (AttachmentTypeError, 415),
    (UploadConflictError, 409),
    (OwnerError, 403),
    (ValueError, 400),
    (TypeError, 400),
)


def attachment_routes(
    attachments: GridFSAttachmentStore[Any], *, context: ContextFor, path: str = "/attachments"
) -> list[BaseRoute]:
    """Routes for ``attachments`` under ``path``:

    * ``POST {path}``: direct upload, ``multipart/form-data`` with a ``file`` field;
      answers the Attachment JSON.
    * ``POST {path}/{attachment_id}/upload``: two-phase upload target (point
      ``upload_url`` here); multipart with a ``file`` field, or the raw bytes as body.
    * ``GET {path}/{attachment_id}``: the bytes, streamed (point ``preview_url`` here).
    """

    async def create(request: Request) -> Response:
        too_large = _refuse_oversized(request, attachments.max_bytes)
        if too_large is not None:
            return too_large
        owner_context = await resolve(context(request))
        async with request.form(max_files=1, max_fields=1) as form:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                return _error(400, 'send the file as a multipart/form-data field named "file"')
            attachment = await attachments.create_and_upload(
                file.filename or "file",
                file.content_type or "application/octet-stream",
                file,
                owner_context,
            )
        return _attachment_response(attachment)

    async def upload(request: Request) -> Response:
        too_large = _refuse_oversized(request, attachments.max_bytes)
        if too_large is not None:
            return too_large
        owner_context = await resolve(context(request))
        attachment_id = request.path_params["attachment_id"]
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form(max_files=1, max_fields=1) as form:
                file = form.get("file")
                if not isinstance(file, UploadFile):
                    return _error(400, 'send the file as a multipart/form-data field named "file"')
                attachment = await attachments.upload(attachment_id, file, owner_context)
        else:
            body: UploadData = request.stream()
            attachment = await attachments.upload(attachment_id, body, owner_context)
        return _attachment_response(attachment)

    async def download(request: Request) -> Response:
        owner_context = await resolve(context(request))
        found = await attachments.open_download(request.path_params["attachment_id"], owner_context)
        mime_type = found.attachment.mime_type
        # SVG can carry script, so only raster images are shown inline.
        inline = mime_type.startswith("image/") and mime_type != "image/svg+xml"
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


def _answering_errors(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except NotFoundError:
            return _error(404, "attachment not found")
        except (ValueError, TypeError, UploadConflictError) as exc:
            status = next(code for kind, code in _ERRORS if isinstance(exc, kind))
            return _error(status, str(exc))

    return answer


def _refuse_oversized(request: Request, max_bytes: int) -> Response | None:
    """413 before reading a body its Content-Length already shows too large.

    Why: Starlette spools a multipart file to disk before the store counts its bytes.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + _MULTIPART_ALLOWANCE:
        return _error(413, f"the request body is {declared} bytes; at most {max_bytes} allowed")
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
