"""Attachment metadata in the store (the bytes are the attachment store's)."""

from __future__ import annotations

from typing import Any

import pytest
from chatkit.store import NotFoundError
from chatkit.types import Attachment

from chatkit_mongo import MongoStore
from chatkit_mongo.schema import Field

from .conftest import RequestContext
from .samples import file_attachment, image_attachment


@pytest.mark.parametrize(
    "attachment", [file_attachment(), image_attachment()], ids=["file", "image"]
)
async def test_attachment_round_trips_exactly(
    store: MongoStore[Any], alice: RequestContext, attachment: Attachment
) -> None:
    await store.save_attachment(attachment, alice)
    loaded = await store.load_attachment(attachment.id, alice)
    assert loaded == attachment
    assert type(loaded) is type(attachment)


async def test_save_attachment_upserts_and_tracks_its_thread(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await store.save_attachment(file_attachment("atc_1"), alice)
    attached = file_attachment("atc_1", thread_id="thr_1")
    await store.save_attachment(attached, alice)
    assert await store.load_attachment("atc_1", alice) == attached
    collection = store.database[store.collections.attachments]
    document = await collection.find_one({Field.ATTACHMENT_ID: "atc_1"})
    assert document[Field.THREAD_ID] == "thr_1"
    assert await collection.count_documents({}) == 1


async def test_missing_attachment_raises_chatkits_not_found(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    with pytest.raises(NotFoundError, match=r"^Attachment atc_x not found$"):
        await store.load_attachment("atc_x", alice)


async def test_delete_attachment_is_idempotent(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await store.save_attachment(image_attachment("atc_1"), alice)
    await store.delete_attachment("atc_1", alice)
    await store.delete_attachment("atc_1", alice)
    with pytest.raises(NotFoundError):
        await store.load_attachment("atc_1", alice)
