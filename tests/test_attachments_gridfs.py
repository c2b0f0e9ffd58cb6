"""GridFSAttachmentStore: bytes, limits, ownership, cleanup, cascade and sweep.

What each backend covers:

* ``gridfs`` tests (the ``attachments`` fixture) move real bytes through the store's
  own GridFS files (``_gridfs``). They run on mongomock-motor and on the server through
  both real drivers: the backends of ``conftest.GRIDFS_BACKENDS``, whose drivers' own
  buckets read the same files (``tests/test_gridfs_files.py``).
* ``metadata`` tests (the ``metadata_only`` fixture) refuse or look up before any byte
  moves: MIME and size checks, ownership of the claim, pending attachments, the sweep
  of abandoned uploads. They run on all three backends, pymongo-async-mock included.

The store writes the chunks itself (``_gridfs.write_file``), through the collections
on every backend, so the break-off and cancellation tests show on each that the cleanup
deletes the chunks written before it.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    AttachmentCreateParams,
    FileAttachment,
    ImageAttachment,
    ThreadItemDoneEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from chatkit_mongo import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    GridFSAttachmentStore,
    IncompleteUploadError,
    MongoStore,
    UploadConflictError,
)
from chatkit_mongo.schema import Field, GridFSField, UploadField

from .attachment_support import CHUNK, make_attachments, preview_url, upload_url
from .conftest import NAMES, RequestContext

PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(3 * CHUNK + 12_345))
"""Three full GridFS chunks and a partial one, with no repeating period of a chunk."""


@pytest.fixture
def attachments(gridfs_store: MongoStore[Any]) -> GridFSAttachmentStore[Any]:
    return make_attachments(gridfs_store)


@pytest.fixture
def metadata_only(store: MongoStore[Any]) -> GridFSAttachmentStore[Any]:
    return make_attachments(store, max_bytes=1000, allowed_mime_types=["image/*", "text/plain"])


async def stored(attachments: GridFSAttachmentStore[Any]) -> tuple[int, int]:
    """How many GridFS files and chunks the bucket holds, for every owner."""
    database = attachments.store.database
    files = await database[NAMES.bucket_files].count_documents({})
    chunks = await database[NAMES.bucket_chunks].count_documents({})
    return files, chunks


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def params(name: str, size: int, mime_type: str) -> AttachmentCreateParams:
    return AttachmentCreateParams(name=name, size=size, mime_type=mime_type)


# ---------------------------------------------------------------- bytes (gridfs)


async def test_two_phase_round_trips_a_multi_chunk_image_byte_for_byte(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    created = await attachments.create_attachment(
        params("photo.png", len(PAYLOAD), "image/png"), alice
    )
    assert isinstance(created, ImageAttachment)
    assert created.upload_descriptor is not None
    assert str(created.upload_descriptor.url) == upload_url(created.id, alice)
    assert str(created.preview_url) == preview_url(created.id, alice)

    uploaded = await attachments.upload(created.id, PAYLOAD, alice)

    assert uploaded.upload_descriptor is None
    assert await attachments.store.load_attachment(created.id, alice) == uploaded
    download = await attachments.open_download(created.id, alice)
    received = [chunk async for chunk in download.chunks]
    assert download.length == len(PAYLOAD)
    assert len(received) == 4
    assert b"".join(received) == PAYLOAD
    assert await stored(attachments) == (1, 4)


@pytest.mark.parametrize(
    "source",
    [
        lambda: PAYLOAD,
        lambda: io.BytesIO(PAYLOAD),
        lambda: pieces(PAYLOAD, 10_000),
        lambda: memoryview(bytearray(PAYLOAD)),
    ],
    ids=["bytes", "file-like", "async-chunks", "memoryview"],
)
async def test_direct_upload_stores_every_kind_of_source(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext, source: Any
) -> None:
    created = await attachments.create_and_upload("notes.txt", "text/plain", source(), alice)

    assert isinstance(created, FileAttachment)
    assert created.upload_descriptor is None
    assert await attachments.read_bytes(created.id, alice) == PAYLOAD


async def test_upload_past_max_bytes_is_refused_and_leaves_nothing(
    gridfs_store: MongoStore[Any], alice: RequestContext
) -> None:
    attachments = make_attachments(gridfs_store, max_bytes=2 * CHUNK)

    with pytest.raises(AttachmentTooLargeError, match="max_bytes"):
        await attachments.create_and_upload("big.bin", "application/octet-stream", PAYLOAD, alice)

    assert await stored(attachments) == (0, 0)
    assert await gridfs_store.database[NAMES.attachments].count_documents({}) == 0


@pytest.mark.parametrize(
    ("data", "error"),
    [(PAYLOAD + b"!", AttachmentTooLargeError), (PAYLOAD[:-1], IncompleteUploadError)],
    ids=["longer", "shorter"],
)
async def test_bytes_that_differ_from_the_declared_size_are_refused_then_retry_works(
    attachments: GridFSAttachmentStore[Any],
    alice: RequestContext,
    data: bytes,
    error: type[Exception],
) -> None:
    created = await attachments.create_attachment(
        params("a.pdf", len(PAYLOAD), "application/pdf"), alice
    )

    with pytest.raises(error):
        await attachments.upload(created.id, data, alice)
    assert await stored(attachments) == (0, 0)

    await attachments.upload(created.id, PAYLOAD, alice)
    assert await attachments.read_bytes(created.id, alice) == PAYLOAD


async def test_a_second_upload_is_refused_and_the_bytes_stay(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    created = await attachments.create_and_upload("a.txt", "text/plain", PAYLOAD, alice)

    with pytest.raises(UploadConflictError, match="already has its bytes"):
        await attachments.upload(created.id, b"other", alice)

    assert await attachments.read_bytes(created.id, alice) == PAYLOAD
    assert await stored(attachments) == (1, 4)


async def test_an_upload_under_way_refuses_a_concurrent_one(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    created = await attachments.create_attachment(params("a.txt", 3, "text/plain"), alice)
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a"
        await gate.wait()
        yield b"bc"

    first = asyncio.create_task(attachments.upload(created.id, slow(), alice))
    await asyncio.sleep(0.05)
    with pytest.raises(UploadConflictError, match="under way"):
        await attachments.upload(created.id, b"xyz", alice)
    gate.set()
    await first

    assert await attachments.read_bytes(created.id, alice) == b"abc"


async def test_an_upload_that_breaks_off_leaves_no_chunks(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    created = await attachments.create_attachment(
        params("a.bin", len(PAYLOAD), "text/plain"), alice
    )

    async def broken() -> AsyncIterator[bytes]:
        yield PAYLOAD[: 2 * CHUNK + 5]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await attachments.upload(created.id, broken(), alice)

    assert await stored(attachments) == (0, 0)
    with pytest.raises(NotFoundError):
        await attachments.open_download(created.id, alice)
    document = await attachments.store.database[NAMES.attachments].find_one({})
    assert document[UploadField.STATE] == UploadField.AWAITING


async def test_an_upload_whose_attachment_is_deleted_meanwhile_keeps_no_bytes(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    created = await attachments.create_attachment(
        params("a.bin", len(PAYLOAD), "text/plain"), alice
    )

    async def outlived() -> AsyncIterator[bytes]:
        yield PAYLOAD
        await attachments.store.delete_attachment(created.id, alice)

    with pytest.raises(NotFoundError):
        await attachments.upload(created.id, outlived(), alice)

    assert await stored(attachments) == (0, 0)


async def test_a_cancelled_upload_leaves_no_chunks(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield PAYLOAD[: 2 * CHUNK]
        started.set()
        await asyncio.Event().wait()
        yield b""

    task = asyncio.create_task(
        attachments.create_and_upload("a.bin", "text/plain", stalls(), alice)
    )
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await stored(attachments) == (0, 0)
    assert await attachments.store.database[NAMES.attachments].count_documents({}) == 0


async def test_no_owner_can_read_overwrite_or_delete_another_owners_bytes(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    done = await attachments.create_and_upload("a.txt", "text/plain", PAYLOAD, alice)
    pending = await attachments.create_attachment(params("b.txt", 2, "text/plain"), alice)

    with pytest.raises(NotFoundError):
        await attachments.open_download(done.id, bob)
    with pytest.raises(NotFoundError):
        await attachments.read_bytes(done.id, bob)
    with pytest.raises(NotFoundError):
        await attachments.upload(pending.id, b"hi", bob)
    await attachments.delete_attachment(done.id, bob)

    assert await attachments.read_bytes(done.id, alice) == PAYLOAD
    assert await stored(attachments) == (1, 4)


async def test_delete_removes_every_chunk_and_is_idempotent(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    kept = await attachments.create_and_upload("keep.txt", "text/plain", b"keep", alice)
    gone = await attachments.create_and_upload("gone.txt", "text/plain", PAYLOAD, alice)

    await attachments.delete_attachment(gone.id, alice)
    await attachments.delete_attachment(gone.id, alice)

    assert await stored(attachments) == (1, 1)
    with pytest.raises(NotFoundError):
        await attachments.open_download(gone.id, alice)
    assert await attachments.read_bytes(kept.id, alice) == b"keep"


async def test_delete_thread_removes_the_bytes_of_that_threads_attachments(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    store = attachments.store
    in_thread = await attachments.create_and_upload("a.txt", "text/plain", PAYLOAD, alice)
    elsewhere = await attachments.create_and_upload("b.txt", "text/plain", b"b", alice)
    bobs = await attachments.create_and_upload("c.txt", "text/plain", b"c", bob)
    for attachment, thread_id, context in (
        (in_thread, "thr_1", alice),
        (elsewhere, "thr_2", alice),
        (bobs, "thr_1", bob),
    ):
        await store.save_attachment(attachment.model_copy(update={"thread_id": thread_id}), context)

    await store.delete_thread("thr_1", alice)

    assert await stored(attachments) == (2, 2)
    with pytest.raises(NotFoundError):
        await store.load_attachment(in_thread.id, alice)
    assert await attachments.read_bytes(elsewhere.id, alice) == b"b"
    assert await attachments.read_bytes(bobs.id, bob) == b"c"


@pytest.mark.needs("find_one_and_delete")  # the sweep takes abandoned uploads with it
async def test_sweep_removes_orphans_and_abandoned_uploads_but_keeps_live_ones(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    store = attachments.store
    live = await attachments.create_and_upload("live.txt", "text/plain", PAYLOAD, alice)
    orphan = await attachments.create_and_upload("orphan.txt", "text/plain", b"o", alice)
    await store.delete_attachment(orphan.id, alice)  # metadata gone, bytes left
    abandoned = await attachments.create_attachment(params("x.txt", 5, "text/plain"), alice)
    old_id = ObjectId.from_datetime(datetime.now(UTC) - timedelta(days=3))
    chunks = store.database[NAMES.bucket_chunks]
    await chunks.insert_one({GridFSField.FILES_ID: old_id, "n": 0, "data": b"left over"})
    # Sweeping "two hours from now" with a one-hour cut-off: an upload that started
    # ninety minutes from now is still young then.
    young_id = ObjectId.from_datetime(datetime.now(UTC) + timedelta(minutes=90))
    await chunks.insert_one({GridFSField.FILES_ID: young_id, "n": 0, "data": b"in flight"})

    report = await attachments.sweep_orphans(
        abandoned_after=timedelta(hours=1), now=datetime.now(UTC) + timedelta(hours=2)
    )

    assert (report.abandoned_uploads, report.orphaned_files, report.orphaned_chunk_sets) == (
        1,
        1,
        1,
    )
    with pytest.raises(NotFoundError):
        await store.load_attachment(abandoned.id, alice)
    assert await attachments.read_bytes(live.id, alice) == PAYLOAD
    assert await chunks.count_documents({GridFSField.FILES_ID: young_id}) == 1
    assert await stored(attachments) == (1, 5)
    again = await attachments.sweep_orphans(now=datetime.now(UTC) + timedelta(days=2))
    assert again.orphaned_files == again.abandoned_uploads == 0


class _InSizes:
    """A collection that notes the length of every ``$in`` list in a filter it is sent."""

    def __init__(self, inner: Any, sizes: list[int]) -> None:
        self._inner, self._sizes = inner, sizes

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in {"find", "find_one", "delete_many", "delete_one"}:
            return target

        def noting(filter_: Any = None, *args: Any, **kwargs: Any) -> Any:
            for value in (filter_ or {}).values():
                if isinstance(value, dict) and "$in" in value:
                    self._sizes.append(len(value["$in"]))
            return target(filter_, *args, **kwargs)

        return noting


async def test_the_sweep_goes_a_batch_of_files_at_a_time(
    gridfs_store: MongoStore[Any], alice: RequestContext
) -> None:
    """More orphans of each kind than a batch holds: all go, the live file stays, and no
    command carries more ids than the batch (one ``$in`` of every id passed MongoDB's
    16 MiB command limit at a few hundred thousand files). No abandoned upload here, so
    it runs where find_one_and_delete is missing too."""
    sizes: list[int] = []
    store: MongoStore[Any] = MongoStore(
        gridfs_store.database, wrap_collection=lambda kind, inner: _InSizes(inner, sizes)
    )
    attachments = make_attachments(store)
    live = await attachments.create_and_upload("live.txt", "text/plain", b"kept", alice)
    for number in range(7):
        orphan = await attachments.create_and_upload(f"o{number}", "text/plain", b"o", alice)
        await store.delete_attachment(orphan.id, alice)  # metadata gone, bytes left
    chunks = store.database[NAMES.bucket_chunks]
    for days in range(2, 9):
        old_id = ObjectId.from_datetime(datetime.now(UTC) - timedelta(days=days))
        await chunks.insert_one({GridFSField.FILES_ID: old_id, "n": 0, "data": b"left"})
    sizes.clear()

    report = await attachments.sweep_orphans(batch_size=3)

    assert (report.orphaned_files, report.orphaned_chunk_sets) == (7, 7)
    assert sizes
    assert max(sizes) <= 3
    assert await stored(attachments) == (1, 1)
    assert await attachments.read_bytes(live.id, alice) == b"kept"
    with pytest.raises(ValueError, match="batch_size"):
        await attachments.sweep_orphans(batch_size=0)


# ---------------------------------------------------------------- through ChatKitServer


class _EchoServer(ChatKitServer[Any]):
    """Answers every message with one assistant message; needs no model."""

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Any
    ) -> AsyncIterator[ThreadStreamEvent]:
        yield ThreadItemDoneEvent(
            item=AssistantMessageItem(
                id="msg_reply",
                thread_id=thread.id,
                created_at=datetime.now(),
                content=[AssistantMessageContent(text="got it")],
            )
        )


async def _call(server: _EchoServer, request: dict[str, Any], context: Any) -> Any:
    result = await server.process(json.dumps(request), context)
    if isinstance(result, NonStreamingResult):
        return json.loads(result.json)
    assert isinstance(result, StreamingResult)
    return [event async for event in result]


async def test_both_strategies_end_to_end_through_a_chatkit_server(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    store = attachments.store
    server = _EchoServer(store, attachments)
    created = await _call(
        server,
        {
            "type": "attachments.create",
            "params": {"name": "p.png", "size": len(PAYLOAD), "mime_type": "image/png"},
        },
        alice,
    )
    assert created["upload_descriptor"]["method"] == "POST"
    await attachments.upload(created["id"], pieces(PAYLOAD, 64 * 1024), alice)
    direct = await attachments.create_and_upload("n.txt", "text/plain", b"notes", alice)

    await _call(
        server,
        {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": "look"}],
                    "attachments": [created["id"], direct.id],
                    "inference_options": {},
                }
            },
        },
        alice,
    )
    threads = await store.load_threads(10, None, "desc", alice)
    thread_id = threads.data[0].id
    items = await store.load_thread_items(thread_id, None, 10, "asc", alice)
    message = items.data[0]
    assert isinstance(message, UserMessageItem)
    assert [a.id for a in message.attachments] == [created["id"], direct.id]
    stored_image = await store.load_attachment(created["id"], alice)
    assert stored_image.thread_id == thread_id
    assert stored_image.upload_descriptor is None
    assert await attachments.read_bytes(created["id"], alice) == PAYLOAD

    await _call(
        server, {"type": "attachments.delete", "params": {"attachment_id": direct.id}}, alice
    )
    with pytest.raises(NotFoundError):
        await store.load_attachment(direct.id, alice)
    assert await stored(attachments) == (1, 4)

    await _call(server, {"type": "threads.delete", "params": {"thread_id": thread_id}}, alice)
    assert await stored(attachments) == (0, 0)


# ---------------------------------------------------------------- metadata (all backends)


async def test_create_saves_owned_metadata_awaiting_its_bytes(
    metadata_only: GridFSAttachmentStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    created = await metadata_only.create_attachment(
        params("a.txt", 10, "Text/Plain; charset=utf-8"), alice
    )

    assert created.mime_type == "text/plain"
    assert await metadata_only.store.load_attachment(created.id, alice) == created
    with pytest.raises(NotFoundError):
        await metadata_only.store.load_attachment(created.id, bob)
    document = await metadata_only.store.database[NAMES.attachments].find_one({})
    assert document[Field.OWNER] == "alice"
    assert document[UploadField.STATE] == UploadField.AWAITING
    assert document[UploadField.DECLARED_SIZE] == 10
    with pytest.raises(NotFoundError):
        await metadata_only.open_download(created.id, alice)


async def test_an_image_without_a_preview_url_is_stored_as_a_file(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    attachments = GridFSAttachmentStore(store, upload_url=upload_url)

    created = await attachments.create_attachment(params("p.png", 10, "image/png"), alice)

    assert isinstance(created, FileAttachment)


@pytest.mark.parametrize(
    ("mime_type", "size", "error", "message"),
    [
        ("application/pdf", 10, AttachmentTypeError, "not accepted"),
        ("not a type", 10, AttachmentTypeError, "not a MIME type"),
        ("image/png", 1001, AttachmentTooLargeError, "at most 1000"),
        ("image/png", -1, ValueError, "non-negative"),
    ],
)
async def test_create_refuses_bad_input_and_stores_nothing(
    *,
    metadata_only: GridFSAttachmentStore[Any],
    alice: RequestContext,
    mime_type: str,
    size: int,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        await metadata_only.create_attachment(params("x", size, mime_type), alice)

    assert await metadata_only.store.database[NAMES.attachments].count_documents({}) == 0


async def test_direct_upload_of_a_disallowed_type_stores_nothing(
    metadata_only: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    with pytest.raises(AttachmentTypeError, match="not accepted"):
        await metadata_only.create_and_upload("x.pdf", "application/pdf", b"%PDF", alice)

    assert await metadata_only.store.database[NAMES.attachments].count_documents({}) == 0


async def test_upload_to_a_missing_or_foreign_attachment_is_not_found(
    metadata_only: GridFSAttachmentStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    created = await metadata_only.create_attachment(params("a.txt", 2, "text/plain"), alice)

    with pytest.raises(NotFoundError):
        await metadata_only.upload("atc_missing", b"hi", alice)
    with pytest.raises(NotFoundError):
        await metadata_only.upload(created.id, b"hi", bob)
    await metadata_only.delete_attachment(created.id, bob)
    await metadata_only.delete_attachment("atc_missing", alice)

    document = await metadata_only.store.database[NAMES.attachments].find_one({})
    assert document[UploadField.STATE] == UploadField.AWAITING


@pytest.mark.needs("find_one_and_delete")  # the sweep takes abandoned uploads with it
async def test_sweep_removes_attachments_pending_past_the_cut_off_only(
    metadata_only: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    created = await metadata_only.create_attachment(params("a.txt", 2, "text/plain"), alice)
    report = await metadata_only.sweep_orphans(abandoned_after=timedelta(hours=1))
    assert report.abandoned_uploads == 0
    assert await metadata_only.store.load_attachment(created.id, alice) == created

    report = await metadata_only.sweep_orphans(
        abandoned_after=timedelta(hours=1), now=datetime.now(UTC) + timedelta(hours=2)
    )

    assert report.abandoned_uploads == 1
    with pytest.raises(NotFoundError):
        await metadata_only.store.load_attachment(created.id, alice)


def test_constructor_refuses_bad_limits_and_patterns(store: MongoStore[Any]) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        GridFSAttachmentStore(store, upload_url=upload_url, max_bytes=0)
    with pytest.raises(ValueError, match="allowed_mime_types"):
        GridFSAttachmentStore(store, upload_url=upload_url, allowed_mime_types=["pdf"])
