"""Upload bodies of every size and encoding through the attachment routes, measured.

Each request goes straight through ASGI (``drive``), its body handed over one piece at
a time, so a test sees how much of the body the routes read, the peak Python memory
they held (tracemalloc) and every file they opened for writing (audit events). A body
far larger than ``max_bytes``, chunked or with a Content-Length that lies, is refused
having read at most ``max_bytes`` plus the multipart allowance and one piece, with no
file written and nothing stored. Runs on mongomock-motor's GridFS and the real server.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import pytest
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams
from starlette.applications import Starlette

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.asgi import MULTIPART_ALLOWANCE, PART_HEADERS_LIMIT

from .attachment_support import (
    Exchange,
    as_user,
    drive,
    files_written,
    make_attachments,
    routes_app,
)
from .conftest import NAMES, RequestContext

ALICE: Final = RequestContext("alice")
MAX_BYTES: Final = 256 * 1024
"""Two GridFS chunks: a refused upload has written one before it is stopped."""
PIECE: Final = 64 * 1024
"""What an HTTP server hands over per read of a request body."""
HUGE: Final = 256 * MAX_BYTES
"""64 MiB: were it read to the end, a test would see it in the bytes consumed."""
HELD_ABOVE_MAX_BYTES: Final = 512 * 1024
"""The most Python memory a request may hold beyond ``max_bytes``: a few body pieces,
a GridFS chunk being filled, the parser and the application's own objects."""
BOUNDARY: Final = "b0undary"
PAYLOAD: Final = bytes(range(256)) * (MAX_BYTES // 256)
"""Exactly ``max_bytes`` of varied bytes."""


def flood(total: int = HUGE, piece: bytes = b"x" * PIECE) -> Iterator[bytes]:
    """``total`` bytes as the same piece again and again: the source holds one piece."""
    for _ in range(total // len(piece)):
        yield piece


def pieces_of(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), PIECE):
        yield data[start : start + PIECE]


def part_head(disposition: str, content_type: str | None = None) -> bytes:
    lines = [f"--{BOUNDARY}", f"Content-Disposition: {disposition}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


FILE_HEAD: Final = part_head('form-data; name="file"; filename="a.txt"', "text/plain")
CLOSING: Final = f"\r\n--{BOUNDARY}--\r\n".encode()


def file_form(data: Iterable[bytes], *, close: bool = True) -> Iterator[bytes]:
    yield FILE_HEAD
    yield from data
    if close:
        yield CLOSING


def many_parts() -> Iterator[bytes]:
    """Endless tiny non-file parts, a piece's worth at a time."""
    part = b"\r\n" + part_head('form-data; name="f"') + b"x"
    yield from flood(HUGE, part * (PIECE // len(part)))


BODIES: Final[dict[str, tuple[Callable[[], Iterator[bytes]], int, str]]] = {
    "file part": (lambda: file_form(flood()), 413, "max_bytes"),
    "file part without end": (lambda: file_form(flood(), close=False), 413, "max_bytes"),
    "non-file field": (lambda: iter([part_head('form-data; name="note"'), *flood()]), 413, ""),
    "many parts": (many_parts, 413, "max_bytes"),
    "one endless header": (
        lambda: iter([f"--{BOUNDARY}\r\nX-Pad: ".encode(), *flood()]),
        400,
        "malformed multipart body",
    ),
    "wide headers": (
        lambda: iter(
            [f"--{BOUNDARY}\r\n".encode(), *flood(HUGE, b"X-Pad: " + b"p" * 4000 + b"\r\n")]
        ),
        400,
        f"headers pass {PART_HEADERS_LIMIT} bytes",
    ),
}
"""Multipart bodies far past ``max_bytes``: (pieces, status, words in the error)."""
MULTIPART: Final = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
ENCODINGS: Final = {
    "chunked": {"transfer-encoding": "chunked"},
    "lying content-length": {"content-length": "100"},
}
"""How the body's size is (not) told: an in-process client can send more than a
Content-Length says, which a server would cut off, so the routes must not trust it."""


@dataclass(frozen=True)
class Measured:
    exchange: Exchange
    peak: int
    written: list[str]


@pytest.fixture
def attachments(gridfs_store: MongoStore[Any]) -> GridFSAttachmentStore[Any]:
    return make_attachments(gridfs_store, max_bytes=MAX_BYTES)


@pytest.fixture
def app(attachments: GridFSAttachmentStore[Any]) -> Starlette:
    return routes_app(attachments)


async def measured(app: Starlette, path: str, headers: dict[str, str], body: Any) -> Measured:
    """One POST through ``drive``, with its peak traced memory and files written."""
    await drive(app, "GET", "/attachments/atc_warmup", as_user("alice"))  # imports, caches
    tracemalloc.start()
    try:
        with files_written() as written:
            exchange = await drive(app, "POST", path, {**as_user("alice"), **headers}, body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return Measured(exchange, peak, written)


async def upload_target(attachments: GridFSAttachmentStore[Any], size: int = MAX_BYTES) -> str:
    params = AttachmentCreateParams(name="a.txt", size=size, mime_type="text/plain")
    return (await attachments.create_attachment(params, ALICE)).id


async def nothing_stored(attachments: GridFSAttachmentStore[Any], awaiting: str | None) -> None:
    """No file or chunk in the bucket; the two-phase attachment ``awaiting`` (if any) is
    the only attachment and still takes a whole upload; no other attachment exists."""
    database = attachments.store.database
    assert await database[NAMES.bucket_files].count_documents({}) == 0
    assert await database[NAMES.bucket_chunks].count_documents({}) == 0
    expected = 0 if awaiting is None else 1
    assert await database[NAMES.attachments].count_documents({}) == expected
    if awaiting is not None:
        with pytest.raises(NotFoundError):
            await attachments.open_download(awaiting, ALICE)
        await attachments.upload(awaiting, PAYLOAD, ALICE)
        assert await attachments.read_bytes(awaiting, ALICE) == PAYLOAD


def assert_bounded(measured: Measured, read_limit: int) -> None:
    exchange = measured.exchange
    assert exchange.consumed <= read_limit + PIECE, exchange.consumed
    assert measured.peak <= MAX_BYTES + HELD_ABOVE_MAX_BYTES, measured.peak
    assert measured.written == []


# ---------------------------------------------------------------- far past max_bytes


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("route", ["direct", "two-phase"])
async def test_a_huge_multipart_body_is_refused_while_it_streams_holding_little(
    app: Starlette,
    attachments: GridFSAttachmentStore[Any],
    route: str,
    body: str,
    encoding: str,
) -> None:
    pieces, status, words = BODIES[body]
    target = None if route == "direct" else await upload_target(attachments)
    path = "/attachments" if target is None else f"/attachments/{target}/upload"

    got = await measured(app, path, {**MULTIPART, **ENCODINGS[encoding]}, pieces())

    assert got.exchange.status == status, got.exchange.body
    assert words in got.exchange.error
    assert_bounded(got, MAX_BYTES + MULTIPART_ALLOWANCE)
    await nothing_stored(attachments, target)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_huge_raw_body_is_refused_while_it_streams_holding_little(
    app: Starlette, attachments: GridFSAttachmentStore[Any], encoding: str
) -> None:
    target = await upload_target(attachments)

    got = await measured(app, f"/attachments/{target}/upload", ENCODINGS[encoding], flood())

    assert got.exchange.status == 413, got.exchange.body
    assert "(max_bytes)" in got.exchange.error
    assert_bounded(got, MAX_BYTES)
    await nothing_stored(attachments, target)


@pytest.mark.parametrize(
    ("route", "headers", "limit"),
    [
        ("direct", MULTIPART, MAX_BYTES + MULTIPART_ALLOWANCE),
        ("two-phase", MULTIPART, MAX_BYTES + MULTIPART_ALLOWANCE),
        ("two-phase", {}, MAX_BYTES),
    ],
    ids=["direct", "two-phase multipart", "two-phase raw"],
)
async def test_a_content_length_past_the_limit_is_refused_before_reading(
    app: Starlette,
    attachments: GridFSAttachmentStore[Any],
    route: str,
    headers: dict[str, str],
    limit: int,
) -> None:
    target = None if route == "direct" else await upload_target(attachments)
    path = "/attachments" if target is None else f"/attachments/{target}/upload"
    declared = {**headers, "content-length": str(limit + 1)}

    got = await measured(app, path, declared, flood())

    assert got.exchange.status == 413, got.exchange.body
    assert f"at most {limit}" in got.exchange.error
    assert got.exchange.consumed == 0
    await nothing_stored(attachments, target)


# ---------------------------------------------------------------- at and past the limit


@pytest.mark.parametrize("encoding", ["chunked", "content-length"])
@pytest.mark.parametrize("over", [0, 1], ids=["max_bytes", "max_bytes + 1"])
@pytest.mark.parametrize("route", ["direct", "two-phase multipart", "two-phase raw"])
async def test_max_bytes_is_accepted_exactly_and_one_more_byte_refused(
    app: Starlette,
    attachments: GridFSAttachmentStore[Any],
    route: str,
    over: int,
    encoding: str,
) -> None:
    data = PAYLOAD + b"!" * over
    target = None if route == "direct" else await upload_target(attachments, MAX_BYTES)
    path = "/attachments" if target is None else f"/attachments/{target}/upload"
    body = list(pieces_of(data) if route == "two-phase raw" else file_form(pieces_of(data)))
    headers = {} if route == "two-phase raw" else dict(MULTIPART)
    if encoding == "chunked":
        headers["transfer-encoding"] = "chunked"
    else:
        headers["content-length"] = str(sum(len(piece) for piece in body))

    got = await measured(app, path, headers, body)

    if over:
        assert got.exchange.status == 413, got.exchange.body
        assert_bounded(got, len(data) + len(FILE_HEAD) + len(CLOSING))
        await nothing_stored(attachments, target)
        return
    # No memory bound here: the double keeps an accepted file in memory, as the database.
    assert got.exchange.status == 200, got.exchange.body
    assert got.written == []
    stored = target or got.exchange.body.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
    assert await attachments.read_bytes(stored, ALICE) == PAYLOAD


# ---------------------------------------------------------------- broken-off bodies


@pytest.mark.parametrize("route", ["direct", "two-phase multipart", "two-phase raw"])
async def test_a_client_that_disconnects_mid_body_leaves_nothing_behind(
    app: Starlette, attachments: GridFSAttachmentStore[Any], route: str
) -> None:
    target = None if route == "direct" else await upload_target(attachments)
    path = "/attachments" if target is None else f"/attachments/{target}/upload"
    half = pieces_of(PAYLOAD[: MAX_BYTES // 2 + 1000])
    body = half if route == "two-phase raw" else file_form(half, close=False)
    headers = {} if route == "two-phase raw" else dict(MULTIPART)

    with files_written() as written:
        got = await drive(app, "POST", path, {**as_user("alice"), **headers}, body, disconnect=True)

    assert got.status == 400
    assert "disconnected" in got.error
    assert written == []
    await nothing_stored(attachments, target)


MALFORMED: Final[dict[str, tuple[list[bytes], str]]] = {
    "no closing boundary": ([FILE_HEAD, b"abc"], "ended inside the file part"),
    "nothing after the file part": (
        [FILE_HEAD, b"abc", f"\r\n--{BOUNDARY}\r\n".encode()],
        "ended before its closing boundary",
    ),
    "two file fields": (
        [FILE_HEAD, b"abc\r\n", FILE_HEAD, b"def", CLOSING],
        'more than one "file" field',
    ),
    "no file field": ([part_head('form-data; name="note"'), b"hi", CLOSING], 'named "file"'),
    "empty body": ([], 'named "file"'),
    "not multipart at all": ([b"hello"], "malformed multipart body"),
    "file name not UTF-8": (
        [part_head('form-data; name="file"; filename="\xff.txt"'), b"abc", CLOSING],
        "not UTF-8",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.parametrize("route", ["direct", "two-phase"])
async def test_malformed_multipart_bodies_get_a_400_naming_the_fault_and_store_nothing(
    app: Starlette, attachments: GridFSAttachmentStore[Any], route: str, case: str
) -> None:
    body, words = MALFORMED[case]
    target = None if route == "direct" else await upload_target(attachments, 3)
    path = "/attachments" if target is None else f"/attachments/{target}/upload"

    got = await drive(app, "POST", path, {**as_user("alice"), **MULTIPART}, body)

    assert got.status == 400, got.body
    assert words in got.error
    database = attachments.store.database
    assert await database[NAMES.bucket_files].count_documents({}) == 0
    assert await database[NAMES.attachments].count_documents({}) == (0 if target is None else 1)


@pytest.mark.parametrize("boundary", ["", "x" * 71], ids=["missing", "71 characters"])
async def test_a_multipart_type_without_a_usable_boundary_is_a_400(
    app: Starlette, boundary: str
) -> None:
    parameter = f"; boundary={boundary}" if boundary else ""
    headers = {**as_user("alice"), "content-type": f"multipart/form-data{parameter}"}

    got = await drive(app, "POST", "/attachments", headers, [FILE_HEAD, b"abc", CLOSING])

    assert got.status == 400
    assert "boundary parameter of 1 to 70 characters" in got.error
