"""Faults and cancellation in GridFSAttachmentStore's writes: upload, create_and_upload and
delete, at every driver call they make and at every await.

Afterwards an attachment is whole or bytes-less: complete with exactly its bytes, or
awaiting (or gone) with no file and no chunk of it anywhere; a retry then succeeds; the
error that reaches the caller is the driver's own; the other owner's attachment is
untouched. A delete cut short may leave bytes no attachment refers to: they are never
downloadable, and the orphan sweep removes them (as its docstring promises).

Backends: mongomock-motor's GridFS and the real server (``gridfs_backend``). The store
writes each chunk and then the files document through its own collection handles
(``_gridfs.write_file``), so the faults and cancellations reach every chunk insert too,
and a cut-off upload is shown to leave no chunk behind on every backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams

from chatkit_mongo import GridFSAttachmentStore, MongoStore, UploadConflictError
from chatkit_mongo._encryption import encrypted_stream_size
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.schema import Field, GridFSField, UploadField

from .attachment_support import CHUNK, make_attachments
from .conftest import NAMES, RequestContext, close_client, make_client, scratch_database
from .encrypted_attachment_support import fresh_database
from .fault_support import (
    FAULTS,
    FaultyNth,
    Recording,
    Switchable,
    Switchboard,
    Timing,
    cancel_at_every_step,
)

pytest_plugins = ("tests.encryption_fixtures",)

ALICE: Final = RequestContext("alice")
BOB: Final = RequestContext("bob")
DATA: Final = bytes(range(251)) * (2 * CHUNK // 251 + 7)
"""Three GridFS chunks, the last one partial."""
SMALL: Final = b"one encrypted piece"
"""For the encrypted cancellation walks: each await of a larger file's pieces is one the
walk passes here too, at a fraction of the steps (the faults above take DATA)."""
HANDLES: Final = ("attachment", "file", "chunk")
"""The collections GridFSAttachmentStore writes through, chunks and files documents included."""


def _switch(attachments: GridFSAttachmentStore[Any], kind: str) -> Switchable:
    """The swappable handle the store was given for ``kind`` through ``wrap_collection``."""
    handle = attachments.store.persistence.collection(kind)  # type: ignore[arg-type]
    assert isinstance(handle, Switchable)
    return handle


Op = Callable[[GridFSAttachmentStore[Any], str, bytes], Awaitable[Any]]


async def _prepared(
    attachments: GridFSAttachmentStore[Any], op_name: str, data: bytes = DATA
) -> str:
    """Bob's finished attachment, and the id ``op_name`` acts on for alice."""
    await attachments.create_and_upload("bob.txt", "text/plain", b"bob's bytes", BOB)
    if op_name == "upload":
        params = AttachmentCreateParams(name="a.bin", size=len(data), mime_type="text/plain")
        return (await attachments.create_attachment(params, ALICE)).id
    if op_name == "delete":
        return (await attachments.create_and_upload("a.bin", "text/plain", data, ALICE)).id
    return ""


OPS: Final[dict[str, Op]] = {
    "upload": lambda a, i, d: a.upload(i, d, ALICE),
    "create_and_upload": lambda a, i, d: a.create_and_upload("a.bin", "text/plain", d, ALICE),
    "delete": lambda a, i, d: a.delete_attachment(i, ALICE),
}


def _chunks_holding(attachments: GridFSAttachmentStore[Any], data: bytes) -> int:
    """How many GridFS chunks ``data`` is stored in by ``attachments``: encrypted, the
    stream of an attachment id (all are as long, so any gives its size)."""
    stored = len(data)
    if attachments.store.persistence.encryption is not None:
        stored = encrypted_stream_size(len(data), "atc_" + "0" * 24)
    return -(-stored // CHUNK)


async def _state(attachments: GridFSAttachmentStore[Any]) -> tuple[list[str], int, int]:
    """Alice's attachment states, and how many GridFS files and chunks exist for her."""
    database = attachments.store.database
    documents = await database[NAMES.attachments].find({Field.OWNER: "alice"}).to_list(None)
    states = sorted(
        str(d.get(UploadField.STATE, "complete" if d.get(UploadField.FILE_ID) else "no bytes"))
        for d in documents
    )
    files = await database[NAMES.bucket_files].find({}, {"_id": 1}).to_list(None)
    bobs = [f["_id"] for f in files if f["_id"] in await _bob_file_ids(attachments)]
    chunks = await database[NAMES.bucket_chunks].count_documents(
        {GridFSField.FILES_ID: {"$nin": bobs}}
    )
    return states, len(files) - len(bobs), chunks


async def _bob_file_ids(attachments: GridFSAttachmentStore[Any]) -> list[Any]:
    files = attachments.store.database[NAMES.bucket_files]
    return [f["_id"] for f in await files.find({GridFSField.METADATA_OWNER: "bob"}).to_list(None)]


async def _check_whole_or_bytes_less(
    attachments: GridFSAttachmentStore[Any], op_name: str, attachment_id: str, data: bytes = DATA
) -> None:
    """The all-or-nothing check after a failed or cancelled op, then a retry and a sweep."""
    states, files, chunks = await _state(attachments)
    whole = (["complete"], 1, _chunks_holding(attachments, data))
    if op_name == "delete":
        assert states == ["no bytes"] or (states, files, chunks) == whole
        if states == ["no bytes"]:
            with pytest.raises(NotFoundError):
                await attachments.open_download(attachment_id, ALICE)
        await OPS[op_name](attachments, attachment_id, data)
        await attachments.sweep_orphans(now=datetime.now(UTC) + timedelta(days=2))
        assert await _state(attachments) == (["no bytes"], 0, 0)
    else:
        assert (states, files, chunks) in (
            whole,
            ([UploadField.AWAITING] if op_name == "upload" else [], 0, 0),
        )
        if states == ["complete"]:
            [document] = (
                await attachments.store.database[NAMES.attachments]
                .find({Field.OWNER: "alice"})
                .to_list(None)
            )
            attachment_id = document[Field.ATTACHMENT_ID]
            if op_name == "upload":  # the retry learns that the first attempt went through
                with pytest.raises(UploadConflictError, match="already has its bytes"):
                    await OPS[op_name](attachments, attachment_id, data)
        else:
            attachment_id = (await OPS[op_name](attachments, attachment_id, data)).id
        assert await attachments.read_bytes(attachment_id, ALICE) == data
        assert await _state(attachments) == whole
    [bobs] = (
        await attachments.store.database[NAMES.attachments].find({Field.OWNER: "bob"}).to_list(None)
    )
    assert await attachments.read_bytes(bobs[Field.ATTACHMENT_ID], BOB) == b"bob's bytes"


@pytest.fixture
async def fresh(gridfs_backend: str) -> AsyncIterator[Callable[..., Any]]:
    """Makes attachment stores on fresh databases of the GridFS-capable backend."""
    client = make_client(gridfs_backend)
    scratches: list[Any] = []

    async def make(**options: Any) -> GridFSAttachmentStore[Any]:
        scratch = scratch_database(client, gridfs_backend)
        scratches.append(scratch)
        database = await scratch.__aenter__()
        store: MongoStore[Any] = MongoStore(database, wrap_collection=Switchboard().wrap)
        return make_attachments(store, **options)

    yield make
    for scratch in scratches:
        await scratch.__aexit__(None, None, None)
    await close_client(client)


async def _driver_calls(fresh: Callable[..., Any], op_name: str) -> list[tuple[str, str, int]]:
    """Each ``(handle, method, how many earlier calls of it)`` the op makes, fault-free."""
    attachments = await fresh()
    attachment_id = await _prepared(attachments, op_name)
    calls: list[tuple[str, str]] = []
    for handle in HANDLES:
        switch = _switch(attachments, handle)
        switch.inner = Recording(switch.inner, handle, calls)
    await OPS[op_name](attachments, attachment_id, DATA)
    return [(h, m, calls[:n].count((h, m))) for n, (h, m) in enumerate(calls)]


async def _run_through_fault(
    attachments: GridFSAttachmentStore[Any],
    op_name: str,
    attachment_id: str,
    error: Exception,
    *,
    timing: Timing,
) -> None:
    """Run the op into ``error``: the caller gets that very error, or, when only the
    reply of an upload's completion was lost, the completed attachment (read back),
    never a complete attachment together with an error."""
    outcome: list[Any] = []
    try:
        outcome.append(await OPS[op_name](attachments, attachment_id, DATA))
    except type(error) as raised:
        outcome.append(raised)
    [result] = outcome
    if result is error:
        if op_name == "create_and_upload":  # no id reached the caller: nothing is kept
            assert await _state(attachments) == ([], 0, 0)
        return
    assert timing == "reply lost"
    assert op_name != "delete"
    assert await attachments.read_bytes(result.id, ALICE) == DATA


@pytest.mark.parametrize("timing", ["request lost", "reply lost"])
@pytest.mark.parametrize("op_name", OPS)
async def test_a_driver_fault_at_every_call_leaves_the_attachment_whole_or_bytes_less(
    fresh: Callable[..., Any], op_name: str, timing: Timing
) -> None:
    points = await _driver_calls(fresh, op_name)
    assert points
    for point in points:
        for error in FAULTS.values():
            attachments = await fresh()
            attachment_id = await _prepared(attachments, op_name)
            handle, method, earlier = point
            switch = _switch(attachments, handle)
            healthy = switch.inner
            switch.inner = FaultyNth(healthy, method, error, timing, earlier)
            await _run_through_fault(attachments, op_name, attachment_id, error, timing=timing)
            switch.inner = healthy
            await _check_whole_or_bytes_less(attachments, op_name, attachment_id)


@pytest.mark.parametrize("op_name", OPS)
async def test_cancellation_at_every_await_leaves_the_attachment_whole_or_bytes_less(
    fresh: Callable[..., Any], op_name: str
) -> None:
    """Cancel after 0, 1, 2... loop steps, until the op finishes uncancelled."""

    async def prepare() -> tuple[GridFSAttachmentStore[Any], str]:
        attachments = await fresh()
        return attachments, await _prepared(attachments, op_name)

    async def check(prepared: tuple[GridFSAttachmentStore[Any], str], points: int) -> None:
        attachments, attachment_id = prepared
        await _check_whole_or_bytes_less(attachments, op_name, attachment_id)

    points = await cancel_at_every_step(
        prepare, lambda prepared: OPS[op_name](*prepared, DATA), check
    )
    # At least the cancel before the op starts; the doubles never wait, so an op that
    # makes no chunk writes (delete) finishes in its first step there.
    assert points >= 1


class _LandsLate:
    """A collection whose first ``find_one_and_update`` goes on when its caller is
    cancelled, and lands only once ``gate`` opens: as a Motor call running in a worker
    thread does, or a command PyMongo Async has already sent."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.called = asyncio.Event()
        self.gate = asyncio.Event()
        self.landing: asyncio.Future[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name != "find_one_and_update" or self.landing is not None:
            return target

        def call(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            async def late() -> Any:
                await self.gate.wait()
                return await target(*args, **kwargs)

            self.landing = asyncio.ensure_future(late())
            self.called.set()
            return asyncio.shield(self.landing)

        return call


async def test_a_claim_landing_after_its_cancellation_leaves_no_stuck_upload(
    fresh: Callable[..., Any],
) -> None:
    """The upload is cancelled while its claim is in flight, and the claim reaches the
    server only afterwards: the attachment must still end awaiting, and a retry work."""
    attachments = await fresh()
    attachment_id = await _prepared(attachments, "upload")
    switch = _switch(attachments, "attachment")
    healthy = switch.inner
    late = _LandsLate(healthy)
    switch.inner = late
    task = asyncio.ensure_future(OPS["upload"](attachments, attachment_id, DATA))
    await late.called.wait()
    task.cancel()
    for _ in range(20):  # time for any clean-up that does not wait for the claim
        await asyncio.sleep(0)
    late.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert late.landing is not None
    await late.landing
    switch.inner = healthy
    assert await _state(attachments) == ([UploadField.AWAITING], 0, 0)
    await _check_whole_or_bytes_less(attachments, "upload", attachment_id)


# ---------------------------------------------------------------------- with encryption


@pytest.fixture
async def sealed_fresh(
    wire_client: Any, key_settings: Encryption
) -> AsyncIterator[Callable[[], Any]]:
    """Makes attachment stores with encryption on fresh databases of the suite's server
    (through the driver of ``wire_client``): the bytes are encrypted streams, the
    metadata ciphertexts, the upload's completion a compare-and-swap."""
    stores: list[MongoStore[Any]] = []

    async def make() -> GridFSAttachmentStore[Any]:
        store: MongoStore[Any] = MongoStore(
            fresh_database(wire_client), encryption=key_settings, wrap_collection=Switchboard().wrap
        )
        stores.append(store)
        return make_attachments(store)

    yield make
    for store in stores:
        await store.close()


@pytest.mark.parametrize("timing", ["request lost", "reply lost"])
@pytest.mark.parametrize("op_name", ["upload", "create_and_upload"])
async def test_with_encryption_a_driver_fault_at_every_call_leaves_it_whole_or_bytes_less(
    sealed_fresh: Callable[..., Any], op_name: str, timing: Timing
) -> None:
    points = await _driver_calls(sealed_fresh, op_name)
    assert ("attachment", "update_one", 0) in points  # the completion's compare-and-swap
    error = FAULTS["connection reset"]
    for point in points:
        attachments = await sealed_fresh()
        attachment_id = await _prepared(attachments, op_name)
        handle, method, earlier = point
        switch = _switch(attachments, handle)
        healthy = switch.inner
        switch.inner = FaultyNth(healthy, method, error, timing, earlier)
        await _run_through_fault(attachments, op_name, attachment_id, error, timing=timing)
        switch.inner = healthy
        await _check_whole_or_bytes_less(attachments, op_name, attachment_id)


@pytest.mark.parametrize(
    ("wire_driver", "op_name"),
    [("pymongo", "upload"), ("pymongo", "create_and_upload"), ("motor", "upload")],
)
async def test_with_encryption_cancellation_at_every_await_leaves_it_whole_or_bytes_less(
    sealed_fresh: Callable[..., Any], op_name: str
) -> None:
    """Every await of an encrypted upload (the engine's included) cancelled once. On
    Motor the two-phase upload only: its loop steps are mostly waits on worker threads
    (hundreds per upload), and the direct upload adds only the insert walked above."""

    async def prepare() -> tuple[GridFSAttachmentStore[Any], str]:
        attachments = await sealed_fresh()
        return attachments, await _prepared(attachments, op_name, SMALL)

    async def check(prepared: tuple[GridFSAttachmentStore[Any], str], points: int) -> None:
        await _check_whole_or_bytes_less(*prepared[:1], op_name, prepared[1], SMALL)

    points = await cancel_at_every_step(
        prepare, lambda prepared: OPS[op_name](*prepared, SMALL), check
    )
    assert points > 10


# ------------------------------------------------------------- lost completion replies


class _ReplyLost:
    """A collection whose ``find_one_and_update`` calls numbered in ``lost`` (from 0)
    land on the server, and then fail as a lost reply does; and whose calls of the
    methods in ``refused`` fail before reaching it (the network still down) once the
    last lost reply has happened (from the start if none is lost)."""

    def __init__(self, inner: Any, lost: set[int], refused: frozenset[str] = frozenset()):
        self._inner, self._lost, self._refused = inner, lost, refused
        self._calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name in self._refused and self._calls > max(self._lost, default=-1):
            return _refusing
        if name != "find_one_and_update":
            return target

        async def landing_then_lost(*args: Any, **kwargs: Any) -> Any:
            number, self._calls = self._calls, self._calls + 1
            result = await target(*args, **kwargs)
            if number in self._lost:
                raise FAULTS["connection reset"]
            return result

        return landing_then_lost


async def _refusing(*args: Any, **kwargs: Any) -> Any:
    raise FAULTS["connection reset"]


async def test_a_direct_upload_whose_completion_reply_is_lost_returns_the_one_attachment(
    fresh: Callable[..., Any],
) -> None:
    """The completion (claim: call 0; completion: call 1) lands and its reply is lost:
    the upload reads the attachment back and returns it, and it is the only one stored,
    so the caller has no reason to send the bytes again."""
    attachments = await fresh()
    await _prepared(attachments, "create_and_upload")
    switch = _switch(attachments, "attachment")
    healthy = switch.inner
    switch.inner = _ReplyLost(healthy, {1})
    attachment = await attachments.create_and_upload("a.bin", "text/plain", DATA, ALICE)
    switch.inner = healthy
    assert await _state(attachments) == (["complete"], 1, _chunks_holding(attachments, DATA))
    assert await attachments.read_bytes(attachment.id, ALICE) == DATA
    assert attachment.upload_descriptor is None


async def test_a_lost_completion_whose_read_back_fails_reaches_the_caller_leaving_nothing(
    fresh: Callable[..., Any],
) -> None:
    """The completion lands, its reply is lost, and every read of the attachment fails
    after it: the caller gets the driver's error, and the direct upload deletes what it
    completed, as the caller has no id to use it by."""
    attachments = await fresh()
    await _prepared(attachments, "create_and_upload")
    switch = _switch(attachments, "attachment")
    healthy = switch.inner
    switch.inner = _ReplyLost(healthy, {1}, frozenset({"find_one"}))
    with pytest.raises(type(FAULTS["connection reset"])):
        await attachments.create_and_upload("a.bin", "text/plain", DATA, ALICE)
    switch.inner = healthy
    assert await _state(attachments) == ([], 0, 0)


async def test_a_lost_completion_whose_clean_up_fails_is_left_to_the_unused_sweep(
    fresh: Callable[..., Any],
) -> None:
    """The network stays down after the completion landed: nothing can be read back or
    deleted, and a complete attachment is left that no caller has the id of. The
    default sweep keeps it (it cannot tell it from one a message is about to use); the
    sweep with ``unused_after`` removes it and its bytes once that old."""
    attachments = await fresh()
    await _prepared(attachments, "create_and_upload")
    switch = _switch(attachments, "attachment")
    healthy = switch.inner
    down = frozenset({"find_one", "update_one", "delete_one"})
    switch.inner = _ReplyLost(healthy, {1}, down)
    with pytest.raises(type(FAULTS["connection reset"])):
        await attachments.create_and_upload("a.bin", "text/plain", DATA, ALICE)
    switch.inner = healthy
    left = (["complete"], 1, _chunks_holding(attachments, DATA))
    assert await _state(attachments) == left
    later = datetime.now(UTC) + timedelta(days=2)
    await attachments.sweep_orphans(now=later)
    assert await _state(attachments) == left
    report = await attachments.sweep_orphans(now=later, unused_after=timedelta(days=1))
    assert await _state(attachments) == ([], 0, 0)
    assert report.unused_attachments == 2  # and bob's, which no message used either


async def test_an_upload_whose_hand_back_fails_is_taken_over_once_its_lease_runs_out(
    fresh: Callable[..., Any],
) -> None:
    """A chunk insert fails, then every hand-back of the claim fails too (PyMongo's pool
    paused after network errors): the attachment is left receiving. A retry within the
    lease is refused as under way; once the lease has run out it takes the attachment
    over and stores its bytes, and the sweep removes what the first attempt wrote."""
    lease = timedelta(seconds=3)  # longer than the hand-back's retries
    attachments = await fresh(upload_lease=lease)
    attachment_id = await _prepared(attachments, "upload")
    chunks, files = _switch(attachments, "chunk"), _switch(attachments, "attachment")
    healthy_chunks, healthy_files = chunks.inner, files.inner
    chunks.inner = FaultyNth(healthy_chunks, "insert_many", FAULTS["timeout"], "reply lost", 0)
    files.inner = _ReplyLost(healthy_files, set(), frozenset({"update_one", "find_one"}))
    with pytest.raises(type(FAULTS["timeout"])):
        await attachments.upload(attachment_id, DATA, ALICE)
    chunks.inner, files.inner = healthy_chunks, healthy_files
    states, _, written = await _state(attachments)
    assert states == [UploadField.RECEIVING]
    assert written > 0
    with pytest.raises(UploadConflictError, match="under way"):
        await attachments.upload(attachment_id, DATA, ALICE)
    [stuck] = (
        await attachments.store.database[NAMES.attachments]
        .find({Field.OWNER: "alice"})
        .to_list(None)
    )
    claimed = stuck[UploadField.PENDING_SINCE].replace(tzinfo=UTC)
    await asyncio.sleep((claimed + lease - datetime.now(UTC)).total_seconds() + 0.05)
    await attachments.upload(attachment_id, DATA, ALICE)
    assert await attachments.read_bytes(attachment_id, ALICE) == DATA
    await attachments.sweep_orphans(now=datetime.now(UTC) + timedelta(days=2))
    assert await _state(attachments) == (["complete"], 1, _chunks_holding(attachments, DATA))


async def test_a_slow_upload_renews_its_lease_and_keeps_its_claim(
    fresh: Callable[..., Any],
) -> None:
    """Pieces arriving over several leases: the upload renews its claim as they come,
    so another upload meanwhile is refused, and the slow one completes."""
    lease = timedelta(milliseconds=300)
    attachments = await fresh(upload_lease=lease)
    attachment_id = await _prepared(attachments, "upload")
    arrived = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        for start in range(0, len(DATA), CHUNK):
            yield DATA[start : start + CHUNK]
            arrived.set()
            await asyncio.sleep(lease.total_seconds() / 2)

    slow = asyncio.ensure_future(attachments.upload(attachment_id, slowly(), ALICE))
    await arrived.wait()
    await asyncio.sleep(lease.total_seconds() * 1.2)
    with pytest.raises(UploadConflictError, match="under way"):
        await attachments.upload(attachment_id, DATA, ALICE)
    await slow
    assert await attachments.read_bytes(attachment_id, ALICE) == DATA


async def test_the_unused_sweep_keeps_used_and_young_attachments_and_others_bytes(
    fresh: Callable[..., Any],
) -> None:
    """Only complete attachments without a thread, past ``unused_after``, go: one a
    message uses (it has a thread) stays, and so does a young one; alice's unused one
    whose ``file_id`` was edited to name bob's file goes without taking bob's bytes."""
    attachments = await fresh()
    store = attachments.store
    collection = store.database[NAMES.attachments]
    bobs = await attachments.create_and_upload("bob.txt", "text/plain", b"bob's", BOB)
    await store.save_attachment(bobs.model_copy(update={"thread_id": "thr_b"}), BOB)
    used = await attachments.create_and_upload("used.txt", "text/plain", b"used", ALICE)
    await store.save_attachment(used.model_copy(update={"thread_id": "thr_1"}), ALICE)
    pointing = await attachments.create_and_upload("p.txt", "text/plain", b"mine", ALICE)
    [bob_document] = await collection.find({Field.OWNER: "bob"}).to_list(None)
    await collection.update_one(
        {Field.OWNER: "alice", Field.ATTACHMENT_ID: pointing.id},
        {"$set": {UploadField.FILE_ID: bob_document[UploadField.FILE_ID]}},
    )
    young = await attachments.sweep_orphans(unused_after=timedelta(hours=1))
    assert young.unused_attachments == 0
    report = await attachments.sweep_orphans(
        now=datetime.now(UTC) + timedelta(hours=2), unused_after=timedelta(hours=1)
    )
    assert report.unused_attachments == 1
    left = await collection.find({}, {Field.ATTACHMENT_ID: 1}).to_list(None)
    assert sorted(d[Field.ATTACHMENT_ID] for d in left) == sorted([bobs.id, used.id])
    assert await attachments.read_bytes(used.id, ALICE) == b"used"
    assert await attachments.read_bytes(bobs.id, BOB) == b"bob's"
    with pytest.raises(ValueError, match="unused_after must be positive"):
        await attachments.sweep_orphans(unused_after=timedelta(0))


@pytest.mark.needs("find_one_and_delete")
async def test_a_create_attachment_whose_reply_is_lost_leaves_what_the_sweep_finds(
    fresh: Callable[..., Any],
) -> None:
    """The insert lands and its reply is lost: the caller has no id, the attachment
    awaits its bytes with a ``pending_since``, and the sweep removes it past its cut-off
    (and not before)."""
    attachments = await fresh()
    switch = _switch(attachments, "attachment")
    healthy = switch.inner
    switch.inner = FaultyNth(healthy, "insert_one", FAULTS["timeout"], "reply lost", 0)
    params = AttachmentCreateParams(name="a.bin", size=3, mime_type="text/plain")
    with pytest.raises(type(FAULTS["timeout"])):
        await attachments.create_attachment(params, ALICE)
    switch.inner = healthy
    [left] = await attachments.store.database[NAMES.attachments].find().to_list(None)
    assert left[UploadField.STATE] == UploadField.AWAITING
    assert isinstance(left[UploadField.PENDING_SINCE], datetime)
    assert (await attachments.sweep_orphans()).abandoned_uploads == 0
    later = datetime.now(UTC) + timedelta(days=2)
    assert (await attachments.sweep_orphans(now=later)).abandoned_uploads == 1
    assert await _state(attachments) == ([], 0, 0)
