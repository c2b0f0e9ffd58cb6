"""``GridFSAttachmentStore.reseal_bytes``: one attachment's bytes rewritten in the store's
current form (the migration's step), on the real drivers.

Whatever stops a rewrite (a driver fault at any call, a cancellation at any await, a
sweep running meanwhile), the attachment reads back its exact bytes, old or new, and at
most one file no attachment refers to is left, which the orphan sweep removes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams

from chatkit_mongo import GridFSAttachmentStore
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.errors import EncryptionConfigError
from chatkit_mongo.schema import Field, GridFSField, UploadField, file_id_owner

from .attachment_support import CHUNK
from .conftest import NAMES, RequestContext
from .encrypted_attachment_support import (
    MARKER,
    encrypted_attachments,
    file_of,
    fresh_database,
    raw_bytes,
    stored_files,
)
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
DATA: Final = MARKER * (2 * CHUNK // len(MARKER) + 40)
"""Three GridFS chunks, the last one partial, with a marker to look for in the clear."""
DIRECTIONS: Final = ("encrypt", "decrypt")


@dataclass
class Pair:
    """Two stores on one database: one without encryption, one with it (each with its
    Switchboard, to inject faults through the public ``wrap_collection`` seam)."""

    plain: GridFSAttachmentStore[Any]
    sealed: GridFSAttachmentStore[Any]
    switches: Switchboard

    def source(self, direction: str) -> GridFSAttachmentStore[Any]:
        """The store whose upload writes the bytes in the form to be rewritten."""
        return self.plain if direction == "encrypt" else self.sealed

    async def reseal(self, direction: str, attachment_id: str, owner: str = "alice") -> bool:
        return await self.sealed.reseal_bytes(
            owner, attachment_id, encrypted=None if direction == "encrypt" else False
        )


@pytest.fixture
async def pairs(wire_client: Any, key_settings: Encryption) -> AsyncIterator[Callable[[], Any]]:
    """Makes :class:`Pair` s on fresh databases of the suite's server."""
    made: list[Pair] = []

    async def make() -> Pair:
        database = fresh_database(wire_client)
        switches = Switchboard()
        # A store being migrated reads both forms: strict=False.
        migrating = dataclasses.replace(key_settings, strict=False)
        pair = Pair(
            encrypted_attachments(database, None),
            encrypted_attachments(database, migrating, wrap_collection=switches.wrap),
            switches,
        )
        await pair.sealed.store.ensure_indexes()  # as init leaves a store to migrate
        made.append(pair)
        return pair

    yield make
    for pair in made:
        await pair.sealed.store.close()


async def _uploaded(pair: Pair, direction: str, data: bytes = DATA) -> str:
    """Alice's attachment in the form to be rewritten, and bob's, never to be touched."""
    source = pair.source(direction)
    await source.create_and_upload("bob.txt", "text/plain", b"bob's bytes", BOB)
    return (await source.create_and_upload("a-secret.bin", "text/plain", data, ALICE)).id


async def _bobs_bytes(pair: Pair, direction: str) -> bytes:
    database = pair.sealed.store.database
    bobs = await database[NAMES.attachments].find_one({Field.OWNER: "bob"})
    return await pair.source(direction).read_bytes(bobs[Field.ATTACHMENT_ID], BOB)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("size", [0, 1, CHUNK, CHUNK + 1, len(DATA)])
async def test_reseal_rewrites_the_bytes_in_the_target_form_once(
    pairs: Callable[[], Any], direction: str, size: int
) -> None:
    pair = await pairs()
    data = DATA[:size]
    attachment_id = await _uploaded(pair, direction, data)
    before = await file_of(pair.sealed, attachment_id)

    assert await pair.reseal(direction, attachment_id) is True

    after = await file_of(pair.sealed, attachment_id)
    assert after[GridFSField.ID] != before[GridFSField.ID]
    assert file_id_owner(after[GridFSField.ID]) == "alice"
    metadata = after[GridFSField.METADATA]
    assert (metadata[Field.OWNER], metadata[Field.ATTACHMENT_ID]) == ("alice", attachment_id)
    if direction == "encrypt":
        assert metadata[GridFSField.ENCRYPTED] is True
        assert after[GridFSField.FILENAME] == attachment_id
    else:
        assert GridFSField.ENCRYPTED not in metadata
        assert after[GridFSField.FILENAME] == "a-secret.bin"
    download = await pair.sealed.open_download(attachment_id, ALICE)
    assert download.length == size
    assert b"".join([chunk async for chunk in download.chunks]) == data
    # The old file is gone, chunks included; bob's is untouched.
    files = await stored_files(pair.sealed.store.database)
    assert sorted(
        f[GridFSField.ID] for f in files if f[GridFSField.METADATA]["owner"] == "alice"
    ) == [after[GridFSField.ID]]
    chunks = pair.sealed.store.database[NAMES.bucket_chunks]
    assert await chunks.count_documents({GridFSField.FILES_ID: before[GridFSField.ID]}) == 0
    assert await _bobs_bytes(pair, direction) == b"bob's bytes"
    # Already in the target form: nothing to do.
    assert await pair.reseal(direction, attachment_id) is False
    assert (await file_of(pair.sealed, attachment_id))[GridFSField.ID] == after[GridFSField.ID]


async def test_encrypted_bytes_keep_no_plaintext_and_plain_stores_cannot_read_them(
    pairs: Callable[[], Any],
) -> None:
    pair = await pairs()
    attachment_id = await _uploaded(pair, "encrypt")
    assert MARKER in await raw_bytes(pair.sealed.store.database)
    await pair.reseal("encrypt", attachment_id)
    assert MARKER not in await raw_bytes(pair.sealed.store.database)
    with pytest.raises(EncryptionConfigError, match="no encryption settings"):
        await pair.plain.open_download(attachment_id, ALICE)


async def test_reseal_refuses_what_it_cannot_read_and_changes_nothing(
    pairs: Callable[[], Any],
) -> None:
    pair = await pairs()
    attachment_id = await _uploaded(pair, "encrypt")
    database = pair.sealed.store.database
    before = await raw_bytes(database)

    with pytest.raises(NotFoundError):  # another owner's attachment
        await pair.reseal("encrypt", attachment_id, owner="bob")
    with pytest.raises(NotFoundError):
        await pair.reseal("encrypt", "atc_missing")
    with pytest.raises(EncryptionConfigError, match="encrypted=True"):
        await pair.plain.reseal_bytes("alice", attachment_id, encrypted=True)
    pending = await pair.plain.create_attachment(
        AttachmentCreateParams(name="p.txt", size=3, mime_type="text/plain"), ALICE
    )
    with pytest.raises(NotFoundError):  # no bytes yet
        await pair.reseal("encrypt", pending.id)
    # A reference to bob's file (an imported or hand-edited document) reaches nothing.
    bobs = await database[NAMES.attachments].find_one({Field.OWNER: "bob"})
    await database[NAMES.attachments].update_one(
        {Field.ATTACHMENT_ID: attachment_id},
        {"$set": {UploadField.FILE_ID: bobs[UploadField.FILE_ID]}},
    )
    with pytest.raises(NotFoundError):
        await pair.reseal("encrypt", attachment_id)
    assert await _bobs_bytes(pair, "encrypt") == b"bob's bytes"
    assert len(await stored_files(database)) == 2
    assert (await raw_bytes(database)).count(MARKER) == before.count(MARKER)


async def test_reseal_changes_nothing_when_the_bytes_changed_meanwhile(
    pairs: Callable[[], Any],
) -> None:
    """The attachment's bytes are deleted while the rewrite streams: the switch finds
    another file id, and the rewrite removes its own new file and reports False."""
    pair = await pairs()
    attachment_id = await _uploaded(pair, "encrypt")
    handle = pair.switches["attachment"]

    class DeletedFirst:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            target = getattr(self.inner, name)
            if name != "update_one":
                return target

            async def after_a_delete(*args: Any, **kwargs: Any) -> Any:
                handle.inner = self.inner
                await pair.plain.delete_attachment(attachment_id, ALICE)
                return await target(*args, **kwargs)

            return after_a_delete

    handle.inner = DeletedFirst(handle.inner)
    assert await pair.reseal("encrypt", attachment_id) is False
    assert await stored_files(pair.sealed.store.database) == [
        f for f in await stored_files(pair.sealed.store.database) if f["metadata"]["owner"] == "bob"
    ]
    with pytest.raises(NotFoundError):
        await pair.sealed.open_download(attachment_id, ALICE)


async def test_a_sweep_during_a_rewrite_leaves_its_new_file(pairs: Callable[[], Any]) -> None:
    """The sweep runs after the new file is written, before the switch: the file no
    attachment refers to yet is a rewrite younger than the cut-off, so it stays."""
    pair = await pairs()
    attachment_id = await _uploaded(pair, "encrypt")
    handle = pair.switches["attachment"]
    reached, go_on = asyncio.Event(), asyncio.Event()

    class Paused:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            target = getattr(self.inner, name)
            if name != "update_one":
                return target

            async def paused(*args: Any, **kwargs: Any) -> Any:
                reached.set()
                await go_on.wait()
                return await target(*args, **kwargs)

            return paused

    handle.inner = Paused(handle.inner)
    rewrite = asyncio.ensure_future(pair.reseal("encrypt", attachment_id))
    await reached.wait()
    handle.inner = handle.inner.inner
    report = await pair.plain.sweep_orphans()
    assert report.orphaned_files == 0
    go_on.set()
    assert await rewrite is True
    assert await pair.sealed.read_bytes(attachment_id, ALICE) == DATA
    # A rewrite's file is swept like any other once older than the cut-off.
    report = await pair.plain.sweep_orphans(now=datetime.now(UTC) + timedelta(days=2))
    assert report.orphaned_files == 0


async def _check_readable(
    pair: Pair, direction: str, attachment_id: str, data: bytes = DATA
) -> None:
    """After a rewrite that was stopped: the attachment reads its exact bytes; a retry
    finishes the rewrite; the sweep leaves exactly the one file, and bob's."""
    assert await pair.sealed.read_bytes(attachment_id, ALICE) == data
    await pair.reseal(direction, attachment_id)
    await pair.sealed.sweep_orphans(now=datetime.now(UTC) + timedelta(days=2))
    database = pair.sealed.store.database
    files = await stored_files(database)
    alices = [f for f in files if f[GridFSField.METADATA][Field.OWNER] == "alice"]
    assert [f[GridFSField.ID] for f in alices] == [
        (await file_of(pair.sealed, attachment_id))[GridFSField.ID]
    ]
    chunks = database[NAMES.bucket_chunks]
    assert await chunks.count_documents({}) == sum(-(-f["length"] // f["chunkSize"]) for f in files)
    assert await pair.sealed.read_bytes(attachment_id, ALICE) == data
    assert await _bobs_bytes(pair, direction) == b"bob's bytes"


HANDLES: Final = ("attachment", "file", "chunk")


async def _driver_calls(
    pair: Pair, direction: str, attachment_id: str
) -> list[tuple[str, str, int]]:
    calls: list[tuple[str, str]] = []
    for handle in HANDLES:
        switch: Switchable = pair.switches[handle]
        switch.inner = Recording(switch.inner, handle, calls)
    await pair.reseal(direction, attachment_id)
    return [(h, m, calls[:n].count((h, m))) for n, (h, m) in enumerate(calls)]


@pytest.mark.parametrize("timing", ["request lost", "reply lost"])
@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_a_driver_fault_at_every_call_leaves_the_attachment_readable(
    pairs: Callable[[], Any], direction: str, timing: Timing
) -> None:
    probe = await pairs()
    points = await _driver_calls(probe, direction, await _uploaded(probe, direction))
    assert ("attachment", "update_one", 0) in points  # the switch
    for point in points:
        error = FAULTS["connection reset"]
        pair = await pairs()
        attachment_id = await _uploaded(pair, direction)
        handle, method, earlier = point
        switch = pair.switches[handle]
        healthy = switch.inner
        switch.inner = FaultyNth(healthy, method, error, timing, earlier)
        with pytest.raises(type(error)) as raised:
            await pair.reseal(direction, attachment_id)
        assert raised.value is error, point
        switch.inner = healthy
        await _check_readable(pair, direction, attachment_id)


@pytest.mark.parametrize(
    ("wire_driver", "direction"),
    [("pymongo", "encrypt"), ("pymongo", "decrypt"), ("motor", "encrypt")],
)
async def test_cancellation_at_every_await_leaves_the_attachment_readable(
    pairs: Callable[[], Any], direction: str
) -> None:
    """Every await of a rewrite is a cancellation point once. A file of one piece, as
    each of a larger file's pieces passes the same awaits (the many-chunk rewrite is
    stopped by the driver faults above). On Motor one direction: its loop steps are
    mostly waits on worker threads (some 400 per rewrite, 25 s a walk), and the two
    directions differ only in which engine call they make."""
    data = MARKER * 5

    async def prepare() -> tuple[Pair, str]:
        pair = await pairs()
        return pair, await _uploaded(pair, direction, data)

    def rewrite(prepared: tuple[Pair, str]) -> Awaitable[bool]:
        pair, attachment_id = prepared
        return pair.reseal(direction, attachment_id)

    async def check(prepared: tuple[Pair, str], steps: int) -> None:
        await _check_readable(prepared[0], direction, prepared[1], data)

    points = await cancel_at_every_step(prepare, rewrite, check)
    assert points > 10  # every driver call and every encryption call is a step
