"""The HTTP routes, through an ASGI client, on the GridFS-capable backends.

Runs on mongomock-motor and through both real drivers on the server (see the
``gridfs_backend`` fixture for why not on pymongo-async-mock). The caller's identity
comes from an ``x-user`` header, as an application's auth middleware would set it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from chatkit.types import AttachmentCreateParams

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.schema import Field

from .attachment_support import as_user, make_attachments, routes_client
from .conftest import NAMES
from .fault_support import FAULTS, FaultyNth, Switchboard

PAYLOAD = bytes(range(256)) * 2100
"""537,600 bytes: three GridFS chunks."""


@pytest.fixture
def attachments(gridfs_store: MongoStore[Any]) -> GridFSAttachmentStore[Any]:
    return make_attachments(
        gridfs_store,
        max_bytes=len(PAYLOAD),
        allowed_mime_types=["image/*", "text/*", "application/pdf"],
    )


@pytest.fixture
async def http(attachments: GridFSAttachmentStore[Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with routes_client(attachments) as client:
        yield client


async def test_direct_upload_then_download_streams_the_exact_bytes(
    http: httpx.AsyncClient,
) -> None:
    created = await http.post(
        "/attachments",
        files={"file": ("report.pdf", PAYLOAD, "application/pdf")},
        headers=as_user("alice"),
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert (body["type"], body["name"]) == ("file", "report.pdf")
    assert "upload_descriptor" not in body

    got = await http.get(f"/attachments/{body['id']}", headers=as_user("alice"))

    assert got.status_code == 200
    assert got.content == PAYLOAD
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-length"] == str(len(PAYLOAD))
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"].startswith('attachment; filename="report.pdf"')


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "raw-body"])
async def test_two_phase_upload_target_accepts_the_bytes_and_images_show_inline(
    http: httpx.AsyncClient, attachments: GridFSAttachmentStore[Any], multipart: bool
) -> None:
    context = {"user_id": "alice"}
    created = await attachments.create_attachment(
        AttachmentCreateParams(name='evil"\r\nname.png', size=len(PAYLOAD), mime_type="image/png"),
        context,
    )
    # Integration-only metadata the application keeps with it never reaches the client.
    await attachments.store.save_attachment(
        created.model_copy(update={"metadata": {"scan": "pending"}}), context
    )
    url = f"/attachments/{created.id}/upload"
    if multipart:
        sent = await http.post(
            url, files={"file": ("x.png", PAYLOAD, "image/png")}, headers=as_user("alice")
        )
    else:
        sent = await http.post(url, content=PAYLOAD, headers=as_user("alice"))
    assert sent.status_code == 200, sent.text
    assert "upload_descriptor" not in sent.json()
    assert "metadata" not in sent.json()
    assert (await attachments.store.load_attachment(created.id, context)).metadata == {
        "scan": "pending"
    }

    got = await http.get(f"/attachments/{created.id}", headers=as_user("alice"))

    assert got.content == PAYLOAD
    disposition = got.headers["content-disposition"]
    assert disposition.startswith('inline; filename="evil___name.png"')
    assert "\r" not in disposition
    assert "\n" not in disposition


async def test_oversized_and_disallowed_uploads_get_413_and_415(
    http: httpx.AsyncClient,
) -> None:
    too_big = await http.post(
        "/attachments",
        files={"file": ("a.txt", PAYLOAD + b"!", "text/plain")},
        headers=as_user("alice"),
    )
    declared_too_big = await http.post(
        "/attachments",
        content=b"x" * (len(PAYLOAD) + 70_000),
        headers={**as_user("alice"), "content-type": "multipart/form-data; boundary=b"},
    )
    disallowed = await http.post(
        "/attachments",
        files={"file": ("a.exe", b"MZ", "application/x-msdownload")},
        headers=as_user("alice"),
    )

    assert too_big.status_code == 413
    assert "max_bytes" in too_big.json()["error"]
    assert declared_too_big.status_code == 413
    assert disallowed.status_code == 415
    assert "not accepted" in disallowed.json()["error"]


async def test_foreign_and_missing_ids_get_the_same_404(http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/attachments", files={"file": ("a.txt", b"secret", "text/plain")}, headers=as_user("alice")
    )
    attachment_id = created.json()["id"]

    foreign = await http.get(f"/attachments/{attachment_id}", headers=as_user("bob"))
    missing = await http.get("/attachments/atc_missing", headers=as_user("bob"))
    overwrite = await http.post(
        f"/attachments/{attachment_id}/upload", content=b"x", headers=as_user("bob")
    )

    assert foreign.status_code == missing.status_code == overwrite.status_code == 404
    assert foreign.json() == missing.json() == overwrite.json()
    second = await http.post(
        f"/attachments/{attachment_id}/upload", content=b"x", headers=as_user("alice")
    )
    assert second.status_code == 409


async def test_a_request_without_an_owner_is_refused(http: httpx.AsyncClient) -> None:
    response = await http.post("/attachments", files={"file": ("a.txt", b"x", "text/plain")})

    assert response.status_code == 403


async def test_a_form_without_a_file_field_is_a_400_and_a_body_not_multipart_a_415(
    http: httpx.AsyncClient,
) -> None:
    no_file = await http.post(
        "/attachments",
        data={"other": "x"},
        files={"picture": ("a.txt", b"x", "text/plain")},
        headers=as_user("alice"),
    )
    urlencoded = await http.post("/attachments", data={"file": "x"}, headers=as_user("alice"))
    raw = await http.post("/attachments", content=b"x", headers=as_user("alice"))

    assert no_file.status_code == 400
    assert 'field named "file"' in no_file.json()["error"]
    assert urlencoded.status_code == raw.status_code == 415
    assert "application/x-www-form-urlencoded" in urlencoded.json()["error"]
    assert "without a Content-Type" in raw.json()["error"]


async def test_a_network_fault_is_a_503_to_send_again_and_the_retry_stores_it_once(
    gridfs_store: MongoStore[Any],
) -> None:
    """The direct upload's first write meets a reset: the client gets 503 with
    Retry-After and no host name, sends the same request again, and one attachment is
    stored."""
    switchboard = Switchboard()
    store: MongoStore[Any] = MongoStore(gridfs_store.database, wrap_collection=switchboard.wrap)
    attachments = make_attachments(store)
    handle = switchboard["attachment"]
    healthy = handle.inner
    handle.inner = FaultyNth(healthy, "insert_one", FAULTS["connection reset"], "request lost", 0)
    files = {"file": ("a.txt", b"once", "text/plain")}
    async with routes_client(attachments) as http:
        faulted = await http.post("/attachments", files=files, headers=as_user("alice"))
        handle.inner = healthy
        sent_again = await http.post("/attachments", files=files, headers=as_user("alice"))
    assert faulted.status_code == 503
    assert faulted.headers["retry-after"] == "1"
    assert "127.0.0.1" not in faulted.text
    assert sent_again.status_code == 200
    stored = await gridfs_store.database[NAMES.attachments].find({}).to_list(None)
    assert [d[Field.ATTACHMENT_ID] for d in stored] == [sent_again.json()["id"]]
