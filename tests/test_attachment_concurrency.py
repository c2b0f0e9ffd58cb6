"""Concurrent uploads: to one attachment exactly one wins, and many attachments at once
from two owners each get exactly their own bytes.

Each upload yields to the loop between its pieces, so the uploads interleave on every
backend. Runs on mongomock-motor's GridFS and the real server (``gridfs_backend``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams

from chatkit_mongo import GridFSAttachmentStore, MongoStore, UploadConflictError

from .attachment_support import CHUNK, interleaved, make_attachments
from .conftest import NAMES, RequestContext

WRITERS = 8
SIZE = CHUNK + 1000


def payload(writer: int) -> bytes:
    return bytes([writer]) * SIZE


@pytest.fixture
def attachments(gridfs_store: MongoStore[Any]) -> GridFSAttachmentStore[Any]:
    return make_attachments(gridfs_store)


async def _counts(attachments: GridFSAttachmentStore[Any]) -> tuple[int, int]:
    database = attachments.store.database
    files = await database[NAMES.bucket_files].count_documents({})
    return files, await database[NAMES.bucket_chunks].count_documents({})


async def test_concurrent_uploads_to_one_attachment_exactly_one_wins(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext
) -> None:
    params = AttachmentCreateParams(name="a.bin", size=SIZE, mime_type="text/plain")
    created = await attachments.create_attachment(params, alice)

    results = await asyncio.gather(
        *(attachments.upload(created.id, interleaved(payload(w)), alice) for w in range(WRITERS)),
        return_exceptions=True,
    )

    winners = [w for w, result in enumerate(results) if not isinstance(result, BaseException)]
    assert len(winners) == 1, results
    losers = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, UploadConflictError) for r in losers), losers
    assert await attachments.read_bytes(created.id, alice) == payload(winners[0])
    assert await _counts(attachments) == (1, 2)


async def test_many_uploads_from_two_owners_at_once_each_keep_their_own_bytes(
    attachments: GridFSAttachmentStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    owners = [alice, bob] * (WRITERS // 2)
    made = await asyncio.gather(
        *(
            attachments.create_and_upload("a.bin", "text/plain", interleaved(payload(w)), owner)
            for w, owner in enumerate(owners)
        )
    )

    assert len({attachment.id for attachment in made}) == WRITERS
    for writer, (attachment, owner) in enumerate(zip(made, owners, strict=True)):
        assert await attachments.read_bytes(attachment.id, owner) == payload(writer)
        other = bob if owner is alice else alice
        with pytest.raises(NotFoundError, match="not found"):
            await attachments.read_bytes(attachment.id, other)
    assert await _counts(attachments) == (WRITERS, 2 * WRITERS)
