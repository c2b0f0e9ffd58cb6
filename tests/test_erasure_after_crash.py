"""``purge --owner`` after an upload killed at any point leaves nothing of that owner.

The upload "process" dies after its k-th driver call, for k = 1, 2, ... until an upload
runs to its end: that call reaches the server, then neither it nor anything after it
returns, and no cleanup runs (as when the process is killed; a cancelled task would
clean up after itself). The bytes written by then may be chunks without their files
document (the driver writes it last), a files document whose attachment still says
"receiving", or a complete attachment. Then ``chatkit-mongo purge --owner alice``, run
as an operator would, must leave no attachment, file or chunk of alice, and bob's
documents and bytes exactly as they were.

Backends: the server through PyMongo's ``AsyncMongoClient`` and through Motor, and
mongomock-motor. The store writes each chunk, then the files document, through the
collection calls counted here (``_gridfs.write_file``), so on every backend the cuts
fall between the chunk writes and the files document as well as between the metadata
steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import pytest
from chatkit.types import AttachmentCreateParams

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.schema import Field, GridFSField

from .attachment_support import CHUNK, make_attachments
from .cli_support import all_documents, encoded, owner_documents, run
from .conftest import NAMES, RequestContext, close_client, make_client, scratch_database

ALICE: Final = RequestContext("alice")
BOB: Final = RequestContext("bob")
DATA: Final = bytes(range(256)) * (3 * CHUNK // 256 + 9)
"""Four GridFS chunks, the last one partial."""
DRIVER_CALLS: Final = (
    "insert_one",
    "insert_many",
    "update_one",
    "find_one",
    "find_one_and_update",
    "delete_one",
    "delete_many",
)

Upload = Callable[[GridFSAttachmentStore[Any]], Awaitable[Any]]


async def _two_phase(attachments: GridFSAttachmentStore[Any]) -> None:
    params = AttachmentCreateParams(name="a.bin", size=len(DATA), mime_type="text/plain")
    created = await attachments.create_attachment(params, ALICE)
    await attachments.upload(created.id, DATA, ALICE)


async def _direct(attachments: GridFSAttachmentStore[Any]) -> None:
    await attachments.create_and_upload("a.bin", "text/plain", DATA, ALICE)


UPLOADS: Final[dict[str, Upload]] = {"two-phase": _two_phase, "direct": _direct}


_UPLOADING: Final = contextvars.ContextVar[bool]("uploading", default=False)
"""Set inside the upload, and so in the tasks it starts (its shielded writes)."""


class Kill:
    """Counts the upload's driver calls; after the ``at``-th, the upload never goes on."""

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.at = 0
        self.calls = 0
        self.dead = asyncio.Event()
        self.killed = asyncio.Event()

    def start(self, at: int, upload: Awaitable[Any]) -> None:
        self.at, self.calls, self.dead, self.killed = at, 0, asyncio.Event(), asyncio.Event()

        async def uploading() -> None:
            _UPLOADING.set(True)
            await upload

        self.task = asyncio.ensure_future(uploading())

    def wrap(self, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(collection: Any, *args: Any, **kwargs: Any) -> Any:
            result = await original(collection, *args, **kwargs)
            if _UPLOADING.get():
                self.calls += 1
                if self.calls == self.at:
                    self.killed.set()
                    await self.dead.wait()  # dead: this call returns only at the teardown
            return result

        return call


@contextlib.contextmanager
def _killable(client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kill]:
    """Every driver call of the client's collection class, counted per task."""
    kill = Kill()
    collection_class = type(client["d"]["c"])
    for name in DRIVER_CALLS:
        monkeypatch.setattr(collection_class, name, kill.wrap(getattr(collection_class, name)))
    yield kill


@pytest.mark.parametrize("upload", UPLOADS)
async def test_purge_after_an_upload_killed_at_any_step_leaves_nothing_of_the_owner(
    gridfs_backend: str, monkeypatch: pytest.MonkeyPatch, upload: str
) -> None:
    client = make_client(gridfs_backend)
    cuts = 0
    with _killable(client, monkeypatch) as kill:
        while True:
            async with scratch_database(client, gridfs_backend) as database:
                store: MongoStore[Any] = MongoStore(database)
                attachments = make_attachments(store)
                await attachments.create_and_upload("b.bin", "text/plain", b"bob" * 99, BOB)
                bobs = encoded(await owner_documents(database, "bob"))
                kill.start(cuts + 1, UPLOADS[upload](attachments))
                assert kill.task is not None
                killed = asyncio.ensure_future(kill.killed.wait())
                await asyncio.wait({kill.task, killed}, return_when=asyncio.FIRST_COMPLETED)
                killed.cancel()
                finished = kill.task.done()
                if finished:
                    await kill.task

                result = await run(gridfs_backend, database, "purge", "--owner", "alice")

                after = await all_documents(database)
                assert result.exit_code == 0, result.output
                assert not [d for d in after[NAMES.attachments] if d[Field.OWNER] == "alice"]
                bob_file_ids = {f["_id"] for f in after[NAMES.bucket_files]}
                assert len(bob_file_ids) == 1
                assert not [
                    c
                    for c in after[NAMES.bucket_chunks]
                    if c[GridFSField.FILES_ID] not in bob_file_ids
                ], f"chunks of alice left after a cut at call {kill.at}"
                assert encoded(await owner_documents(database, "bob")) == bobs
                # Teardown: the dead upload may go on (its writes are shielded from
                # cancellation), so the scratch database is dropped after it.
                kill.dead.set()
                with contextlib.suppress(Exception):
                    await kill.task
            if finished:
                break
            cuts += 1
    await close_client(client)
    assert cuts >= 3  # at least: pending, claimed, bytes written
