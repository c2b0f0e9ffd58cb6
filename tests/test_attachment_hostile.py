"""Hostile input to GridFSAttachmentStore and its routes: operator injection and odd ids
through every id argument, MIME types that lie or dodge the allow-list, odd names, and
uploads whose bytes disagree with their declared size.

Each is refused with an error naming what was wrong, or stored exactly as given; none
leaves a byte behind or reaches bob's attachment. Runs on mongomock-motor's GridFS and
the real server (``gridfs_backend``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final
from urllib.parse import quote

import httpx
import pytest
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams

from chatkit_mongo import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    GridFSAttachmentStore,
    MongoStore,
)

from .attachment_support import as_user, interleaved, make_attachments, routes_client
from .conftest import NAMES, RequestContext
from .hostile_values import BAD_ID_STRINGS, INJECTIONS, ODD_BUT_VALID_IDS

ALICE: Final = RequestContext("alice")
BOB: Final = RequestContext("bob")
MAX_BYTES: Final = 1000
BOBS_BYTES: Final = b"bob's secret"

IdCall = Callable[[GridFSAttachmentStore[Any], Any], Awaitable[Any]]
ID_CALLS: Final[dict[str, IdCall]] = {
    "upload": lambda a, i: a.upload(i, b"x", ALICE),
    "open_download": lambda a, i: a.open_download(i, ALICE),
    "read_bytes": lambda a, i: a.read_bytes(i, ALICE),
    "delete_attachment": lambda a, i: a.delete_attachment(i, ALICE),
}
"""Every call of the attachment store that takes an attachment id."""
REFUSED_MIME_TYPES: Final[dict[Any, str]] = {
    "*/*": "is not a MIME type",
    "image/*": "is not a MIME type",
    "text": "is not a MIME type",
    "": "is not a MIME type",
    "text/plain\r\nx-evil: 1": "is not a MIME type",
    "text/plain/../x": "is not a MIME type",
    "application/x-msdownload": "are not accepted",
    "image/svg+xml; q=1": "are not accepted",
    None: "must be a str",
    7: "must be a str",
}
"""With ``allowed_mime_types=["image/png", "text/*"]``."""
ODD_NAMES: Final = [
    "../../etc/passwd",
    "C:\\Windows\\system32\\a.txt",
    'a"; filename="evil.html',
    "line\r\nContent-Type: text/html",
    "résumé 🦊 你好.txt",
    "",
    " . ",
    "nul\x00.txt",
    "n" * 20_000,
]


@pytest.fixture
async def attachments(gridfs_store: MongoStore[Any]) -> GridFSAttachmentStore[Any]:
    made = make_attachments(
        gridfs_store, max_bytes=MAX_BYTES, allowed_mime_types=["image/png", "text/*"]
    )
    await made.create_and_upload("bob.txt", "text/plain", BOBS_BYTES, BOB)
    return made


@pytest.fixture
async def http(attachments: GridFSAttachmentStore[Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with routes_client(attachments) as client:
        yield client


async def _alice_left_nothing(attachments: GridFSAttachmentStore[Any]) -> None:
    """No attachment of alice's, and only bob's file and chunk in the bucket; bob's intact."""
    database = attachments.store.database
    assert await database[NAMES.attachments].count_documents({"owner": "alice"}) == 0
    assert await database[NAMES.bucket_files].count_documents({}) == 1
    assert await database[NAMES.bucket_chunks].count_documents({}) == 1
    [bobs] = await database[NAMES.attachments].find({"owner": "bob"}).to_list(None)
    assert await attachments.read_bytes(bobs["attachment_id"], BOB) == BOBS_BYTES


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize("value", INJECTIONS, ids=repr)
@pytest.mark.parametrize("call", ID_CALLS)
async def test_operator_injection_through_every_id_is_refused_naming_it(
    attachments: GridFSAttachmentStore[Any], call: str, value: Any
) -> None:
    with pytest.raises(
        TypeError, match=f"^attachment_id must be a str, not {type(value).__name__}"
    ):
        await ID_CALLS[call](attachments, value)
    await _alice_left_nothing(attachments)


@pytest.mark.parametrize("value", BAD_ID_STRINGS, ids=["empty", "too long", "surrogate"])
@pytest.mark.parametrize("call", ID_CALLS)
async def test_bad_id_strings_are_refused_naming_the_argument(
    attachments: GridFSAttachmentStore[Any], call: str, value: str
) -> None:
    with pytest.raises(ValueError, match=f"^attachment_id .*{BAD_ID_STRINGS[value]}"):
        await ID_CALLS[call](attachments, value)
    await _alice_left_nothing(attachments)


@pytest.mark.parametrize("value", ODD_BUT_VALID_IDS, ids=repr)
@pytest.mark.parametrize("call", ID_CALLS)
async def test_odd_but_valid_ids_are_simply_not_found(
    attachments: GridFSAttachmentStore[Any], call: str, value: str
) -> None:
    if call == "delete_attachment":
        await ID_CALLS[call](attachments, value)  # idempotent: nothing to say
    else:
        with pytest.raises(NotFoundError, match="not found"):
            await ID_CALLS[call](attachments, value)
    await _alice_left_nothing(attachments)


@pytest.mark.parametrize(
    "path",
    ["%24ne", "..%2F..%2Fetc", "%00", "x" * 600, quote("ünï 🦊"), "%7B%22%24gt%22%3A%22%22%7D"],
)
async def test_odd_ids_in_route_paths_get_400_or_404_never_bobs_bytes(
    http: httpx.AsyncClient, attachments: GridFSAttachmentStore[Any], path: str
) -> None:
    download = await http.get(f"/attachments/{path}", headers=as_user("alice"))
    upload = await http.post(f"/attachments/{path}/upload", content=b"x", headers=as_user("alice"))

    for response in (download, upload):
        assert response.status_code in (400, 404), response.text
        assert BOBS_BYTES not in response.content
    await _alice_left_nothing(attachments)


# ---------------------------------------------------------------- MIME types


@pytest.mark.parametrize("mime_type", REFUSED_MIME_TYPES, ids=repr)
async def test_refused_mime_types_store_nothing_and_say_why(
    attachments: GridFSAttachmentStore[Any], mime_type: Any
) -> None:
    message = REFUSED_MIME_TYPES[mime_type]
    with pytest.raises(AttachmentTypeError, match=message):
        await attachments.create_and_upload("a", mime_type, b"x", ALICE)
    if isinstance(mime_type, str):
        with pytest.raises(AttachmentTypeError, match=message):
            await attachments.create_attachment(
                AttachmentCreateParams(name="a", size=1, mime_type=mime_type), ALICE
            )
    await _alice_left_nothing(attachments)


@pytest.mark.parametrize(
    ("given", "stored"),
    [("TEXT/Plain; charset=utf-8", "text/plain"), (" image/PNG ", "image/png"), ("text/x-c", None)],
)
async def test_allowed_types_are_stored_bare_and_lower_case(
    attachments: GridFSAttachmentStore[Any], given: str, stored: str | None
) -> None:
    made = await attachments.create_and_upload("a", given, b"x", ALICE)

    assert made.mime_type == (stored or given)
    assert (await attachments.open_download(made.id, ALICE)).attachment.mime_type == made.mime_type


@pytest.mark.parametrize("content_type", ["*/*", "application/x-msdownload", "text"])
async def test_routes_answer_415_for_refused_types(
    http: httpx.AsyncClient, attachments: GridFSAttachmentStore[Any], content_type: str
) -> None:
    response = await http.post(
        "/attachments", files={"file": ("a", b"x", content_type)}, headers=as_user("alice")
    )

    assert response.status_code == 415, response.text
    await _alice_left_nothing(attachments)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ODD_NAMES, ids=lambda n: repr(n)[:30])
async def test_odd_names_round_trip_and_download_with_a_harmless_disposition(
    http: httpx.AsyncClient, attachments: GridFSAttachmentStore[Any], name: str
) -> None:
    made = await attachments.create_and_upload(name, "text/plain", b"hello", ALICE)
    assert (await attachments.store.load_attachment(made.id, ALICE)).name == name

    response = await http.get(f"/attachments/{made.id}", headers=as_user("alice"))

    assert response.status_code == 200
    assert response.content == b"hello"
    disposition = response.headers["content-disposition"]
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert disposition.startswith(f"attachment; filename=\"{fallback}\"; filename*=UTF-8''")
    assert disposition.endswith(quote(name, safe=""))
    assert not {"/", "\\", '"', "\r", "\n", "\x00"} & set(fallback)
    assert response.headers["content-type"].startswith("text/plain")


# ---------------------------------------------------------------- sizes that lie


@pytest.mark.parametrize(
    "case",
    [
        (10, b"x" * 11, 413, "its declared size"),
        (10, b"x" * 9, 400, "9 bytes arrived, 10 were declared"),
        (0, b"x", 413, "its declared size"),
        (MAX_BYTES, b"x" * (MAX_BYTES + 1), 413, "max_bytes"),
    ],
)
async def test_two_phase_bodies_that_disagree_with_their_size_are_refused_then_retry_works(
    http: httpx.AsyncClient,
    attachments: GridFSAttachmentStore[Any],
    case: tuple[int, bytes, int, str],
) -> None:
    declared, sent, status, message = case
    params = AttachmentCreateParams(name="a.txt", size=declared, mime_type="text/plain")
    created = await attachments.create_attachment(params, ALICE)
    path = f"/attachments/{created.id}/upload"

    streamed = await http.post(path, content=interleaved(sent), headers=as_user("alice"))
    whole = await http.post(path, content=sent, headers=as_user("alice"))

    for response in (streamed, whole):
        assert response.status_code == status, response.text
        assert message in response.json()["error"]
    with pytest.raises(NotFoundError):
        await attachments.open_download(created.id, ALICE)
    database = attachments.store.database
    assert await database[NAMES.bucket_files].count_documents({}) == 1  # bob's
    right = await http.post(path, content=b"y" * declared, headers=as_user("alice"))
    assert right.status_code == 200, right.text
    assert await attachments.read_bytes(created.id, ALICE) == b"y" * declared


async def test_a_declared_size_past_max_bytes_is_refused_at_create(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    params = AttachmentCreateParams(name="a.txt", size=MAX_BYTES + 1, mime_type="text/plain")
    with pytest.raises(AttachmentTooLargeError, match=f"at most {MAX_BYTES}"):
        await attachments.create_attachment(params, ALICE)
    await _alice_left_nothing(attachments)


async def test_a_direct_upload_stream_that_grows_past_max_bytes_is_refused(
    http: httpx.AsyncClient, attachments: GridFSAttachmentStore[Any]
) -> None:
    """A chunked multipart body: no Content-Length tells its size in advance."""
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    body = head + b"x" * (MAX_BYTES + 1) + f"\r\n--{boundary}--\r\n".encode()

    response = await http.post(
        "/attachments",
        content=interleaved(body),
        headers={**as_user("alice"), "content-type": f"multipart/form-data; boundary={boundary}"},
    )

    assert response.status_code == 413, response.text
    assert "max_bytes" in response.json()["error"]
    await _alice_left_nothing(attachments)
