"""GridFSAttachmentStore with encryption on, through both real drivers on the suite's
server: exact round trips and plaintext lengths at every size around the stream's piece
and padding boundaries, nothing readable in the database, limits on plaintext, the
completion's compare-and-swap, unreadable bytes reported as not found (before any byte)
or as CiphertextError (mid-stream, never garbage), the HTTP routes and the FastAPI
example, and the erase paths and ownership proofs on encrypted files.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
import pytest
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams, ThreadMetadata
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo._encryption import (
    PIECE_BYTES,
    STREAM_MAGIC,
    encrypted_stream_size,
    final_record,
    is_ciphertext,
)
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.errors import (
    AttachmentTooLargeError,
    CiphertextError,
    IncompleteUploadError,
)
from chatkit_mongo.operations.erase import purge_owner
from chatkit_mongo.schema import Field, GridFSField, UploadField

from . import capabilities
from .attachment_support import as_user, routes_client
from .conftest import NAMES, RequestContext
from .encrypted_attachment_support import (
    MARKER,
    encrypted_attachments,
    file_of,
    fresh_database,
    raw_bytes,
    stored_files,
)
from .encryption_support import close_client, fresh_encryption, open_client

pytest_plugins = ("tests.encryption_fixtures",)

ALICE: Final = RequestContext("alice")
BOB: Final = RequestContext("bob")
NAME: Final = "zebra-crossing-7f3a-notes.txt"
"""An attachment name that must not be readable in the database."""
BOUND_TO: Final = "atc_" + "0" * 24
"""As long as every attachment id: the stream sizes of all attachments are alike."""


def pattern(size: int) -> bytes:
    """``size`` bytes holding the marker, every piece different."""
    block = MARKER + bytes(range(256))
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
async def attachments(
    wire_client: Any, key_settings: Encryption
) -> AsyncIterator[GridFSAttachmentStore[Any]]:
    store_attachments = encrypted_attachments(fresh_database(wire_client), key_settings)
    yield store_attachments
    await store_attachments.store.close()


# ---------------------------------------------------------------------- exact lengths

boundary_sizes = st.one_of(
    st.integers(0, 3).flatmap(
        lambda pieces: st.integers(-40, 40).map(lambda d: max(0, pieces * PIECE_BYTES + d))
    ),
    st.integers(0, 4 * PIECE_BYTES),
)
"""Sizes at and around whole pieces (where the final piece changes) and anywhere."""


FULL_RECORD: Final = encrypted_stream_size(2 * PIECE_BYTES, BOUND_TO) - encrypted_stream_size(
    PIECE_BYTES, BOUND_TO
)
"""The stored size of one full piece's record."""


@given(size=boundary_sizes)
def test_the_final_record_is_placed_by_the_stored_size_alone(size: int) -> None:
    """The layout part of the exact plaintext length: every full piece's record has one
    size, so the stored size places the final record, whose bytes give the rest."""
    stored = encrypted_stream_size(size, BOUND_TO)
    index, offset = final_record(stored, BOUND_TO)
    assert index == max(0, -(-size // PIECE_BYTES) - 1)
    assert offset == len(STREAM_MAGIC) + index * FULL_RECORD
    final_bytes = size - index * PIECE_BYTES
    assert stored - offset == encrypted_stream_size(final_bytes, BOUND_TO) - len(STREAM_MAGIC)


def test_the_stored_size_alone_cannot_give_the_plaintext_length() -> None:
    """Why the final record is decrypted: CBC padding gives 16 sizes one stored size."""
    sharing = Counter(
        encrypted_stream_size(n, BOUND_TO) for n in range(PIECE_BYTES - 256, PIECE_BYTES)
    )
    assert max(sharing.values()) == 16


@given(size=boundary_sizes, off=st.integers(1, 15), sign=st.sampled_from([1, -1]))
def test_a_stored_size_no_stream_has_is_refused(size: int, off: int, sign: int) -> None:
    """Stream sizes step by 16 within a piece, so a size within 15 bytes of one is no
    stream's (an altered ``length``), nor is one below the smallest stream."""
    with pytest.raises(CiphertextError, match="altered"):
        final_record(encrypted_stream_size(size, BOUND_TO) + sign * off, BOUND_TO)
    with pytest.raises(CiphertextError, match="altered"):
        final_record(encrypted_stream_size(0, BOUND_TO) - off, BOUND_TO)


@pytest.mark.parametrize("wire_driver", ["pymongo", "motor"])
def test_downloads_have_the_exact_plaintext_length_at_every_boundary(wire_driver: str) -> None:
    """Uploads of sizes around piece (255 KiB) and padding (16 bytes) boundaries read back
    with ``Download.length`` equal to the plaintext length, and exactly their bytes."""
    runner = asyncio.Runner()
    settings_ = fresh_encryption()
    context: dict[str, Any] = {}

    async def open_store() -> None:
        context["client"] = open_client(wire_driver, capabilities.server().uri)
        context["attachments"] = encrypted_attachments(
            fresh_database(context["client"]), settings_, max_bytes=4 * PIECE_BYTES
        )

    runner.run(open_store())
    attachments: GridFSAttachmentStore[Any] = context["attachments"]

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(size=boundary_sizes, direct=st.booleans())
    def round_trip(size: int, direct: bool) -> None:
        async def body() -> None:
            data = pattern(size)
            if direct:
                created = await attachments.create_and_upload(NAME, "text/plain", data, ALICE)
            else:
                params = AttachmentCreateParams(name=NAME, size=size, mime_type="text/plain")
                pending = await attachments.create_attachment(params, ALICE)
                created = await attachments.upload(pending.id, data, ALICE)
            download = await attachments.open_download(created.id, ALICE)
            assert download.length == size
            assert b"".join([chunk async for chunk in download.chunks]) == data
            file = await file_of(attachments, created.id)
            assert file["length"] == encrypted_stream_size(size, created.id)
            await attachments.delete_attachment(created.id, ALICE)

        runner.run(body())

    try:
        round_trip()
    finally:
        runner.run(attachments.store.close())
        runner.run(close_client(context["client"]))
        runner.close()


# ---------------------------------------------------------------------- what is stored


async def test_nothing_of_the_name_or_bytes_is_readable_in_the_database(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    data = pattern(2 * PIECE_BYTES + 100)
    direct = await attachments.create_and_upload(NAME, "text/plain", data, ALICE)
    params = AttachmentCreateParams(name=NAME, size=len(data), mime_type="text/plain")
    two_phase = await attachments.upload(
        (await attachments.create_attachment(params, ALICE)).id, data, ALICE
    )
    assert two_phase.upload_descriptor is None
    assert two_phase.name == NAME

    database = attachments.store.database
    stored = await raw_bytes(database)
    assert MARKER not in stored
    assert NAME.encode() not in stored
    for attachment in (direct, two_phase):
        file = await file_of(attachments, attachment.id)
        assert file[GridFSField.FILENAME] == attachment.id
        assert file[GridFSField.METADATA] == {
            Field.OWNER: "alice",
            Field.ATTACHMENT_ID: attachment.id,
            GridFSField.ENCRYPTED: True,
        }
        document = await database[NAMES.attachments].find_one({Field.ATTACHMENT_ID: attachment.id})
        assert is_ciphertext(document[Field.DATA])
        assert UploadField.STATE not in document
        assert await attachments.store.load_attachment(attachment.id, ALICE) == attachment
        assert await attachments.read_bytes(attachment.id, ALICE) == data


async def test_the_limits_count_plaintext_bytes(wire_client: Any, key_settings: Encryption) -> None:
    limit = PIECE_BYTES + 5
    attachments = encrypted_attachments(fresh_database(wire_client), key_settings, max_bytes=limit)
    try:
        exact = await attachments.create_and_upload(NAME, "text/plain", pattern(limit), ALICE)
        assert (await file_of(attachments, exact.id))["length"] > limit  # stored is larger
        assert await attachments.read_bytes(exact.id, ALICE) == pattern(limit)
        with pytest.raises(AttachmentTooLargeError):
            await attachments.create_and_upload(NAME, "text/plain", pattern(limit + 1), ALICE)
        params = AttachmentCreateParams(name=NAME, size=100, mime_type="text/plain")
        short = await attachments.create_attachment(params, ALICE)
        with pytest.raises(IncompleteUploadError):
            await attachments.upload(short.id, pattern(99), ALICE)
        with pytest.raises(AttachmentTooLargeError):
            await attachments.upload(short.id, pattern(101), ALICE)
        assert len(await stored_files(attachments.store.database)) == 1
        await attachments.upload(short.id, pattern(100), ALICE)
        assert await attachments.read_bytes(short.id, ALICE) == pattern(100)
    finally:
        await attachments.store.close()


async def test_a_save_landing_during_an_upload_is_kept_by_the_completion(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    """ChatKit saves the attachment's metadata while its bytes may still arrive. The
    completion cannot clear the descriptor by path in a ciphertext: it re-seals, and
    its compare-and-swap finds the newer metadata and clears the descriptor in that."""
    params = AttachmentCreateParams(name=NAME, size=3 * PIECE_BYTES, mime_type="text/plain")
    pending = await attachments.create_attachment(params, ALICE)
    store = attachments.store
    await store.save_thread(ThreadMetadata(id="thr_1", created_at=datetime.now()), ALICE)

    data = pattern(3 * PIECE_BYTES)

    async def body() -> AsyncIterator[bytes]:
        yield data[:PIECE_BYTES]
        await store.save_attachment(pending.model_copy(update={"thread_id": "thr_1"}), ALICE)
        yield data[PIECE_BYTES:]

    completed = await attachments.upload(pending.id, body(), ALICE)

    assert (completed.thread_id, completed.upload_descriptor) == ("thr_1", None)
    assert await store.load_attachment(pending.id, ALICE) == completed
    assert await attachments.read_bytes(pending.id, ALICE) == data


# ---------------------------------------------------------------------- unreadable bytes


async def test_bytes_made_for_another_attachment_or_owner_read_as_not_found(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    database = attachments.store.database
    target = await attachments.create_and_upload(NAME, "text/plain", pattern(1000), ALICE)
    other = await attachments.create_and_upload(NAME, "text/plain", pattern(3000), ALICE)
    bobs = await attachments.create_and_upload(NAME, "text/plain", pattern(2000), BOB)
    for source in (other, bobs):
        # A file relabelled as the target's (its metadata edited, the reference moved):
        # the stream is bound to another attachment, or sealed with another owner's key.
        source_file = await file_of(attachments, source.id)
        await database[NAMES.bucket_files].update_one(
            {GridFSField.ID: source_file[GridFSField.ID]},
            {"$set": {GridFSField.METADATA_OWNER: "alice", "metadata.attachment_id": target.id}},
        )
        await database[NAMES.attachments].update_one(
            {Field.ATTACHMENT_ID: target.id},
            {"$set": {UploadField.FILE_ID: source_file[GridFSField.ID]}},
        )
        with pytest.raises(NotFoundError):
            await attachments.open_download(target.id, ALICE)
        with pytest.raises(NotFoundError):
            await attachments.read_bytes(target.id, ALICE)


async def test_metadata_swapped_between_an_owners_attachments_reads_as_not_found(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    """Each attachment's sealed metadata names its id: moved over another attachment of
    the same owner, neither downloads nor takes an upload."""
    database = attachments.store.database
    one = await attachments.create_and_upload(NAME, "text/plain", pattern(100), ALICE)
    other = await attachments.create_and_upload(NAME, "text/plain", pattern(200), ALICE)
    pending = await attachments.create_attachment(
        AttachmentCreateParams(name=NAME, size=10, mime_type="text/plain"), ALICE
    )
    collection = database[NAMES.attachments]
    stored = {
        attachment_id: (await collection.find_one({Field.ATTACHMENT_ID: attachment_id}))[Field.DATA]
        for attachment_id in (one.id, other.id, pending.id)
    }
    moves = {one.id: stored[other.id], other.id: stored[one.id], pending.id: stored[one.id]}
    for attachment_id, data in moves.items():
        await collection.update_one(
            {Field.ATTACHMENT_ID: attachment_id}, {"$set": {Field.DATA: data}}
        )
    for attachment_id in (one.id, other.id):
        with pytest.raises(NotFoundError):
            await attachments.open_download(attachment_id, ALICE)
    with pytest.raises(NotFoundError):
        await attachments.upload(pending.id, pattern(10), ALICE)


async def test_a_shredded_owner_reads_as_not_found(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    kept = await attachments.create_and_upload(NAME, "text/plain", pattern(10), BOB)
    gone = await attachments.create_and_upload(NAME, "text/plain", pattern(10), ALICE)
    params = AttachmentCreateParams(name=NAME, size=3, mime_type="text/plain")
    pending = await attachments.create_attachment(params, ALICE)
    engine = attachments.store.persistence.encryption
    assert engine is not None
    assert await engine.shred("alice")
    with pytest.raises(NotFoundError):
        await attachments.open_download(gone.id, ALICE)
    with pytest.raises(NotFoundError):
        await attachments.upload(pending.id, b"abc", ALICE)
    document = await attachments.store.database[NAMES.attachments].find_one(
        {Field.ATTACHMENT_ID: pending.id}
    )
    assert document[UploadField.STATE] == UploadField.AWAITING  # the claim handed back
    assert await attachments.read_bytes(kept.id, BOB) == pattern(10)


async def _drain(chunks: AsyncIterator[bytes], into: list[bytes]) -> None:
    """Read ``chunks`` to their end (or their error), keeping what was handed out."""
    async for piece in chunks:
        into.append(piece)


async def _chunk(database: Any, file_id: Any, n: int) -> dict[str, Any]:
    chunk: dict[str, Any] = await database[NAMES.bucket_chunks].find_one(
        {GridFSField.FILES_ID: file_id, GridFSField.CHUNK_NUMBER: n}
    )
    return chunk


async def test_altered_bytes_fail_mid_stream_and_never_as_garbage(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    database = attachments.store.database
    data = pattern(4 * PIECE_BYTES + 7)
    created = await attachments.create_and_upload(NAME, "text/plain", data, ALICE)
    file_id = (await file_of(attachments, created.id))[GridFSField.ID]
    chunk = await _chunk(database, file_id, 1)
    altered = bytearray(chunk[GridFSField.CHUNK_DATA])
    altered[len(altered) // 2] ^= 1
    await database[NAMES.bucket_chunks].update_one(
        {GridFSField.ID: chunk[GridFSField.ID]}, {"$set": {GridFSField.CHUNK_DATA: bytes(altered)}}
    )

    download = await attachments.open_download(created.id, ALICE)
    assert download.length == len(data)
    pieces: list[bytes] = []
    with pytest.raises(CiphertextError):
        await _drain(download.chunks, pieces)
    received = b"".join(pieces)
    assert data.startswith(received)
    assert len(received) < len(data)


async def test_a_file_cut_short_is_refused_before_its_last_byte(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    """The final chunk dropped and the length edited to match: the layout no longer fits,
    or the pieces run out before the final one; no body ever looks whole."""
    database = attachments.store.database
    data = pattern(3 * PIECE_BYTES)
    created = await attachments.create_and_upload(NAME, "text/plain", data, ALICE)
    file = await file_of(attachments, created.id)
    last = -(-file["length"] // file["chunkSize"]) - 1
    await database[NAMES.bucket_chunks].delete_one(
        {GridFSField.FILES_ID: file[GridFSField.ID], GridFSField.CHUNK_NUMBER: last}
    )
    await database[NAMES.bucket_files].update_one(
        {GridFSField.ID: file[GridFSField.ID]}, {"$set": {"length": last * file["chunkSize"]}}
    )
    try:
        download = await attachments.open_download(created.id, ALICE)
    except NotFoundError:
        return
    pieces: list[bytes] = []
    with pytest.raises(CiphertextError):
        await _drain(download.chunks, pieces)
    assert len(b"".join(pieces)) < len(data)


# ---------------------------------------------------------------------- erase paths


async def test_delete_thread_purge_and_delete_attachment_remove_encrypted_bytes(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    store = attachments.store
    database = store.database
    await store.save_thread(ThreadMetadata(id="thr_1", created_at=datetime.now()), ALICE)
    in_thread = await attachments.create_and_upload(NAME, "text/plain", pattern(900), ALICE)
    await store.save_attachment(in_thread.model_copy(update={"thread_id": "thr_1"}), ALICE)
    loose = await attachments.create_and_upload(NAME, "text/plain", pattern(800), ALICE)
    deleted = await attachments.create_and_upload(NAME, "text/plain", pattern(700), ALICE)
    bobs = await attachments.create_and_upload(NAME, "text/plain", pattern(600), BOB)

    await store.delete_thread("thr_1", ALICE)
    await attachments.delete_attachment(deleted.id, ALICE)
    owners = sorted(f[GridFSField.METADATA][Field.OWNER] for f in await stored_files(database))
    assert owners == ["alice", "bob"]
    with pytest.raises(NotFoundError):
        await attachments.open_download(deleted.id, ALICE)

    counts = await purge_owner(database, store.collections, "alice")
    assert counts.files == 1
    assert [f[GridFSField.METADATA][Field.OWNER] for f in await stored_files(database)] == ["bob"]
    with pytest.raises(NotFoundError):
        await attachments.open_download(loose.id, ALICE)
    assert await attachments.read_bytes(bobs.id, BOB) == pattern(600)


async def test_a_reference_to_another_owners_encrypted_file_erases_nothing(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    database = attachments.store.database
    bobs = await attachments.create_and_upload(NAME, "text/plain", pattern(600), BOB)
    alices = await attachments.create_and_upload(NAME, "text/plain", pattern(500), ALICE)
    bobs_file = (await file_of(attachments, bobs.id))[GridFSField.ID]
    await database[NAMES.attachments].update_one(
        {Field.ATTACHMENT_ID: alices.id}, {"$set": {UploadField.FILE_ID: bobs_file}}
    )
    with pytest.raises(NotFoundError):
        await attachments.open_download(alices.id, ALICE)
    await attachments.delete_attachment(alices.id, ALICE)
    assert await attachments.read_bytes(bobs.id, BOB) == pattern(600)


async def test_the_sweep_removes_orphaned_encrypted_files(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    database = attachments.store.database
    kept = await attachments.create_and_upload(NAME, "text/plain", pattern(600), ALICE)
    orphan = await attachments.create_and_upload(NAME, "text/plain", pattern(600), ALICE)
    await database[NAMES.attachments].delete_one({Field.ATTACHMENT_ID: orphan.id})
    report = await attachments.sweep_orphans(now=datetime.now(UTC) + timedelta(days=2))
    assert report.orphaned_files == 1
    assert [f[GridFSField.METADATA][Field.ATTACHMENT_ID] for f in await stored_files(database)] == [
        kept.id
    ]
    assert await attachments.read_bytes(kept.id, ALICE) == pattern(600)


# ---------------------------------------------------------------------- HTTP


async def test_the_routes_serve_encrypted_attachments_with_their_plaintext_length(
    attachments: GridFSAttachmentStore[Any],
) -> None:
    data = pattern(PIECE_BYTES + 333)
    async with routes_client(attachments) as http:
        direct = await http.post(
            "/attachments", files={"file": (NAME, data, "text/plain")}, headers=as_user("alice")
        )
        assert direct.status_code == 200, direct.text
        params = AttachmentCreateParams(name=NAME, size=len(data), mime_type="text/plain")
        pending = await attachments.create_attachment(params, {"user_id": "alice"})
        raw = await http.post(
            f"/attachments/{pending.id}/upload", content=data, headers=as_user("alice")
        )
        assert raw.status_code == 200, raw.text
        for attachment_id in (direct.json()["id"], pending.id):
            got = await http.get(f"/attachments/{attachment_id}", headers=as_user("alice"))
            assert got.status_code == 200
            assert got.headers["content-length"] == str(len(data))
            assert got.content == data
            foreign = await http.get(f"/attachments/{attachment_id}", headers=as_user("bob"))
            assert foreign.status_code == 404
    assert MARKER not in await raw_bytes(attachments.store.database)


async def test_the_fastapi_example_runs_with_encryption(
    wire_client: Any, key_settings: Encryption
) -> None:
    """The example's own create_app on a store with ``encryption=``: a two-phase upload
    whose bytes reach the model (through the converter's read_bytes) and download back."""
    from examples.fastapi_server import create_app  # noqa: PLC0415  (needs the examples extra)

    store: MongoStore[Any] = MongoStore(fresh_database(wire_client), encryption=key_settings)
    app = create_app(store)
    alice = {"X-User-Id": "alice"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            started = await http.post(
                "/chatkit",
                json={"type": "threads.create", "params": {"input": _message("hello")}},
                headers=alice,
            )
            assert started.status_code == 200, started.text
            thread_id = _events(started.text)[0]["thread"]["id"]
            created = await http.post(
                "/chatkit",
                json={
                    "type": "attachments.create",
                    "params": {"name": NAME, "size": 11, "mime_type": "text/plain"},
                },
                headers=alice,
            )
            assert created.status_code == 200, created.text
            attachment_id = created.json()["id"]
            uploaded = await http.post(
                created.json()["upload_descriptor"]["url"], content=b"hello notes", headers=alice
            )
            assert uploaded.status_code == 200, uploaded.text
            followed = await http.post(
                "/chatkit",
                json={
                    "type": "threads.add_user_message",
                    "params": {"thread_id": thread_id, "input": _message("see", attachment_id)},
                },
                headers=alice,
            )
            assert f"I received {NAME} (11 bytes)." in followed.text
            download = await http.get(f"/attachments/{attachment_id}", headers=alice)
            assert (download.content, download.headers["content-length"]) == (b"hello notes", "11")
    stored = await raw_bytes(store.database)
    assert b"hello notes" not in stored
    assert NAME.encode() not in stored


def _message(text: str, *attachments: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": list(attachments),
        "inference_options": {},
    }


def _events(body: str) -> list[dict[str, Any]]:
    blocks = [b for b in body.split("\n\n") if b.strip()]
    return [json.loads(block.removeprefix("data: ")) for block in blocks]
