"""Many two-phase uploads cancelled at random moments, through the real drivers over a
socket: none may be left stuck ``receiving``, and a retry of each one succeeds.

Why the real drivers: a cancelled driver call can still reach the server after the
caller has moved on (Motor runs it in a thread; PyMongo Async may have sent it), which
no in-process double reproduces. That is how an unshielded claim could land after the
upload's own clean-up and leave the attachment claimed by an upload that was gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any, Final

import pytest
from chatkit.types import AttachmentCreateParams

from chatkit_mongo import GridFSAttachmentStore, MongoStore, UploadConflictError
from chatkit_mongo.schema import Field, UploadField

from .attachment_support import make_attachments
from .conftest import NAMES, SERVER_BACKENDS, RequestContext, scratch_database

ALICE: Final = RequestContext("alice")
UPLOADS: Final = 200
BATCH: Final = 20
"""Uploads per fresh database: jongodb's writes slow down as a collection grows."""
DATA: Final = b"attachment bytes " * 8


async def _cancelled_batch(
    attachments: GridFSAttachmentStore[Any], rng: random.Random
) -> dict[str, int]:
    """Cancel BATCH uploads, one after another, each after a random delay within the
    first quarter of the time an uncancelled upload takes here (where the claim is in
    flight); then count the outcomes and retry each."""
    params = AttachmentCreateParams(name="a.bin", size=len(DATA), mime_type="text/plain")
    ids = [(await attachments.create_attachment(params, ALICE)).id for _ in range(BATCH + 1)]
    started = time.perf_counter()
    await attachments.upload(ids.pop(), DATA, ALICE)
    duration = time.perf_counter() - started
    for attachment_id in ids:
        task = asyncio.ensure_future(attachments.upload(attachment_id, DATA, ALICE))
        await asyncio.sleep(rng.uniform(0, duration / 4))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    documents = (
        await attachments.store.database[NAMES.attachments]
        .find({Field.OWNER: "alice", Field.ATTACHMENT_ID: {"$in": ids}})
        .to_list(None)
    )
    states = [d.get(UploadField.STATE, "complete") for d in documents]
    outcome = {state: states.count(state) for state in ("complete", "awaiting", "receiving")}
    for attachment_id in ids:
        try:
            await attachments.upload(attachment_id, DATA, ALICE)
        except UploadConflictError as exc:
            if "already has its bytes" not in str(exc):
                outcome["retry refused"] = outcome.get("retry refused", 0) + 1
                continue
        assert await attachments.read_bytes(attachment_id, ALICE) == DATA
    return outcome


@pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True)
async def test_cancelled_two_phase_uploads_are_never_left_stuck(client: Any, backend: str) -> None:
    rng = random.Random(8)
    totals: dict[str, int] = {}
    for _ in range(UPLOADS // BATCH):
        async with scratch_database(client, backend) as database:
            outcome = await _cancelled_batch(make_attachments(MongoStore(database)), rng)
        for key, count in outcome.items():
            totals[key] = totals.get(key, 0) + count
    print(f"{backend}: {UPLOADS} cancelled uploads -> {totals}")
    assert totals.get("receiving", 0) == 0, totals
    assert totals.get("retry refused", 0) == 0, totals
    assert totals["complete"] + totals["awaiting"] == UPLOADS
    assert totals["awaiting"] > 0, "no cancellation struck before the upload completed"
