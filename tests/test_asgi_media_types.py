"""Media types at the attachment routes: parsed as RFC 9110 says, served safely.

Every case variant of ``multipart/form-data`` and of its ``boundary`` parameter (quoted
or not, with other parameters and optional whitespace around) is parsed as multipart by
both upload routes, so the file's bytes, never the multipart envelope, are stored. On
download only the listed raster image types are ``inline``; every ``+xml`` type and
every type a browser may run script in or render as a document is a download.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Final

import mongomock_motor
import pytest
from chatkit.types import AttachmentCreateParams
from hypothesis import given, settings
from hypothesis import strategies as st

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.asgi import INLINE_MIME_TYPES

from .attachment_support import as_user, drive, make_attachments, routes_app
from .conftest import GRIDFS_BACKENDS, RequestContext
from .strategies import StoreRunner, examples

ALICE: Final = RequestContext("alice")
PAYLOAD: Final = b"the file's own bytes " * 50
RASTER: Final = frozenset(
    {"image/png", "image/apng", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"}
)
"""The inline allow-list as docs/attachments.md documents it."""
DOWNLOADED: Final = (
    "image/svg+xml",
    "image/x-foo+xml",
    "application/xhtml+xml",
    "application/xml",
    "text/xml",
    "application/rss+xml",
    "application/mathml+xml",
    "text/html",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "application/pdf",
    "application/x-shockwave-flash",
    "application/wasm",
    "text/css",
    "text/plain",
    "multipart/x-mixed-replace",
    "message/rfc822",
    "application/octet-stream",
    "image/tiff",
    "image/x-icon",
    "image/heic",
)
"""Script-capable, document-rendering, or merely unlisted: all served as downloads."""
TOKEN: Final = string.ascii_lowercase + string.digits + "!#$&^_.+-"
"""The characters the store accepts in a type or subtype."""


def any_case(word: str) -> st.SearchStrategy[str]:
    """``word`` with each letter in either case."""
    return st.tuples(*(st.sampled_from(sorted({c.lower(), c.upper()})) for c in word)).map("".join)


spaces = st.sampled_from(["", " ", "\t", "  "])
bchars = st.text(string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1, max_size=70)
"""RFC 2046 boundary characters (space left out: it may not end one)."""
HTTP_TOKEN: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


@st.composite
def multipart_headers(draw: st.DrawFn) -> tuple[str, str]:
    """A ``Content-Type`` of multipart/form-data in any spelling, and its boundary."""
    boundary = draw(bchars)
    quoted = not set(boundary) <= HTTP_TOKEN or draw(st.booleans())
    value = f'"{boundary}"' if quoted else boundary
    parameters = [f"{draw(any_case('boundary'))}={value}"]
    if draw(st.booleans()):
        charset = draw(st.sampled_from(["utf-8", '"UTF-8"']))
        extra = f"{draw(any_case('charset'))}={charset}"
        parameters.insert(draw(st.integers(0, 1)), extra)
    separator = draw(spaces) + ";" + draw(spaces)
    kind = f"{draw(any_case('multipart'))}/{draw(any_case('form-data'))}"
    return kind + separator + separator.join(parameters), boundary


@st.composite
def file_part_heads(draw: st.DrawFn) -> bytes:
    """The ``file`` part's headers, names, disposition and parameters in any case."""
    disposition = (
        f"{draw(any_case('Content-Disposition'))}: {draw(any_case('form-data'))}; "
        f'{draw(any_case("name"))}="file"; {draw(any_case("filename"))}="p.txt"'
    )
    content_type = f"{draw(any_case('Content-Type'))}: {draw(any_case('text/plain'))}"
    return f"{disposition}\r\n{content_type}\r\n\r\n".encode()


@contextmanager
def runner_for(backend: str) -> Iterator[StoreRunner]:
    """A fresh store per example, GridFS enabled on the double."""
    with ExitStack() as stack:
        if backend == "motor-mock":
            stack.enter_context(mongomock_motor.enabled_gridfs_integration())
        runner = StoreRunner(backend)
        stack.callback(runner.close)
        yield runner


async def _upload_both_ways(
    attachments: GridFSAttachmentStore[Any], content_type: str, body: bytes
) -> None:
    app = routes_app(attachments)
    headers = {**as_user("alice"), "content-type": content_type}
    direct = await drive(app, "POST", "/attachments", headers, [body])
    assert direct.status == 200, direct.body
    params = AttachmentCreateParams(name="p.txt", size=len(PAYLOAD), mime_type="text/plain")
    target = await attachments.create_attachment(params, ALICE)
    two_phase = await drive(app, "POST", f"/attachments/{target.id}/upload", headers, [body])
    assert two_phase.status == 200, two_phase.body
    direct_id = direct.body.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
    for attachment_id in (direct_id, target.id):
        found = await attachments.open_download(attachment_id, ALICE)
        assert (found.attachment.name, found.attachment.mime_type) == ("p.txt", "text/plain")
        assert await attachments.read_bytes(attachment_id, ALICE) == PAYLOAD


@pytest.mark.parametrize("backend", GRIDFS_BACKENDS)
@settings(max_examples=examples(60))
@given(header=multipart_headers(), head=file_part_heads())
def test_every_spelling_of_multipart_is_parsed_as_multipart_by_both_routes(
    backend: str, header: tuple[str, str], head: bytes
) -> None:
    content_type, boundary = header
    body = f"--{boundary}\r\n".encode() + head + PAYLOAD + f"\r\n--{boundary}--\r\n".encode()
    with runner_for(backend) as runner:
        runner.run(_upload_both_ways(make_attachments(runner.store), content_type, body))


# ---------------------------------------------------------------- served inline or not


async def _served(attachments: GridFSAttachmentStore[Any], mime_type: str) -> dict[str, str]:
    made = await attachments.create_and_upload("f", mime_type, b"<x/>", ALICE)
    got = await drive(routes_app(attachments), "GET", f"/attachments/{made.id}", as_user("alice"))
    assert got.status == 200, got.body
    assert got.body == b"<x/>"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-security-policy"] == "sandbox"
    return got.headers


def test_the_inline_list_is_the_documented_raster_list() -> None:
    assert INLINE_MIME_TYPES == RASTER


@pytest.mark.parametrize("mime_type", sorted(RASTER))
async def test_listed_raster_images_are_served_inline(
    gridfs_store: MongoStore[Any], mime_type: str
) -> None:
    headers = await _served(make_attachments(gridfs_store), mime_type)

    assert headers["content-disposition"].startswith('inline; filename="f"')
    assert headers["content-type"] == mime_type


@pytest.mark.parametrize("mime_type", DOWNLOADED)
async def test_xml_script_capable_and_unlisted_types_are_downloads(
    gridfs_store: MongoStore[Any], mime_type: str
) -> None:
    headers = await _served(make_attachments(gridfs_store), mime_type)

    assert headers["content-disposition"].startswith('attachment; filename="f"')


token = st.text(TOKEN, min_size=1, max_size=12)
mime_types = st.one_of(
    st.sampled_from(sorted(RASTER)).flatmap(any_case),
    st.builds(
        lambda t, s: f"{t}/{s}+xml", st.sampled_from(["image", "application", "text"]), token
    ).flatmap(any_case),
    st.builds(lambda t, s: f"{t}/{s}", st.sampled_from(["image", "application", "text"]), token),
    st.builds(lambda t, s: f"{t}/{s}", token, token),
)


@pytest.mark.parametrize("backend", GRIDFS_BACKENDS)
@settings(max_examples=examples(80))
@given(mime_type=mime_types)
def test_a_type_is_served_inline_exactly_when_it_is_a_listed_raster_type(
    backend: str, mime_type: str
) -> None:
    with runner_for(backend) as runner:
        headers = runner.run(_served(make_attachments(runner.store), mime_type))
    inline = headers["content-disposition"].startswith("inline;")
    assert inline == (mime_type.lower() in RASTER), (mime_type, headers)
    if mime_type.lower().endswith("+xml"):
        assert not inline
    assert headers["content-type"].split(";")[0] == mime_type.lower()
