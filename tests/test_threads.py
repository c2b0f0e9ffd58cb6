"""Threads: round trips, upserts, ordering to the microsecond, pages, and the cascade."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from chatkit.store import NotFoundError
from chatkit.types import Page, Thread, ThreadMetadata

from chatkit_mongo import MongoStore
from chatkit_mongo.schema import Field

from .conftest import RequestContext
from .samples import (
    BASE_TIME,
    assistant_message,
    file_attachment,
    image_attachment,
    thread,
    threads_for_variety,
)


@pytest.mark.parametrize("original", threads_for_variety(), ids=lambda t: t.id)
async def test_thread_round_trips_exactly(
    store: MongoStore[Any], alice: RequestContext, original: ThreadMetadata
) -> None:
    await store.save_thread(original, alice)
    loaded = await store.load_thread(original.id, alice)
    assert loaded == original
    assert (loaded.created_at.tzinfo is None) == (original.created_at.tzinfo is None)
    assert loaded.created_at.microsecond == original.created_at.microsecond


async def test_naive_stays_naive_and_aware_stays_aware(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    naive = thread("thr_naive", created_at=datetime.now())
    aware = thread("thr_aware", created_at=datetime.now(UTC))
    for t in (naive, aware):
        await store.save_thread(t, alice)
    assert (await store.load_thread("thr_naive", alice)).created_at.tzinfo is None
    assert (await store.load_thread("thr_aware", alice)).created_at.tzinfo is not None
    # ChatKit subtracts a stored naive stamp from datetime.now(): this must not raise.
    assert datetime.now() - (await store.load_thread("thr_naive", alice)).created_at >= timedelta(0)


async def test_save_thread_upserts_metadata(store: MongoStore[Any], alice: RequestContext) -> None:
    await store.save_thread(thread(title="first"), alice)
    await store.save_thread(thread(title="second", metadata={"k": 1}), alice)
    loaded = await store.load_thread("thr_1", alice)
    assert (loaded.title, loaded.metadata) == ("second", {"k": 1})
    assert await store.database[store.collections.threads].count_documents({}) == 1


async def test_save_thread_stores_metadata_without_items(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    full = Thread(
        id="thr_1",
        created_at=BASE_TIME,
        title="with items",
        items=Page(data=[assistant_message("msg_1")], has_more=False),
    )
    await store.save_thread(full, alice)
    document = await store.database[store.collections.threads].find_one({})
    assert "items" not in document[Field.DATA]
    loaded = await store.load_thread("thr_1", alice)
    assert type(loaded) is ThreadMetadata
    assert loaded.title == "with items"
    items = await store.load_thread_items("thr_1", None, 10, "asc", alice)
    assert items.data == []


async def test_document_is_native_and_queryable(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await store.save_thread(thread(title="Findable", metadata={"team": "core"}), alice)
    document = await store.database[store.collections.threads].find_one(
        {f"{Field.DATA}.metadata.team": "core"}
    )
    assert document is not None
    assert document[Field.OWNER] == "alice"
    assert document[Field.THREAD_ID] == "thr_1"
    assert document[Field.DATA]["title"] == "Findable"
    assert isinstance(document[Field.CREATED_AT], datetime)


async def test_load_missing_thread_raises_chatkits_not_found(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    with pytest.raises(NotFoundError, match=r"^Thread thr_none not found$"):
        await store.load_thread("thr_none", alice)


async def _save_threads(store: MongoStore[Any], ctx: RequestContext, count: int) -> list[str]:
    """Threads a microsecond apart (so within one BSON millisecond), saved out of order."""
    ids = [f"thr_{n:03d}" for n in range(count)]
    for n in reversed(range(count)):
        await store.save_thread(
            thread(ids[n], created_at=BASE_TIME + timedelta(microseconds=n)), ctx
        )
    return ids


async def _walk(store: MongoStore[Any], ctx: RequestContext, limit: int, order: str) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await store.load_threads(limit, after, order, ctx)
        seen.extend(t.id for t in page.data)
        assert page.after == (page.data[-1].id if page.has_more else None)
        if not page.has_more:
            return seen
        after = page.after


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
async def test_thread_pages_walk_every_thread_once_in_both_orders(
    store: MongoStore[Any], alice: RequestContext, limit: int
) -> None:
    ids = await _save_threads(store, alice, 7)
    assert await _walk(store, alice, limit, "asc") == ids
    assert await _walk(store, alice, limit, "desc") == ids[::-1]


async def test_equal_times_are_ordered_by_id(store: MongoStore[Any], alice: RequestContext) -> None:
    for thread_id in ("thr_b", "thr_c", "thr_a"):
        await store.save_thread(thread(thread_id), alice)
    asc = await store.load_threads(10, None, "asc", alice)
    desc = await store.load_threads(10, None, "desc", alice)
    assert [t.id for t in asc.data] == ["thr_a", "thr_b", "thr_c"]
    assert [t.id for t in desc.data] == ["thr_c", "thr_b", "thr_a"]


async def test_aware_and_naive_times_sort_on_one_utc_timeline(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    plus_two = timezone(timedelta(hours=2))
    await store.save_thread(thread("thr_late", created_at=datetime(2026, 1, 1, 12, 0)), alice)
    # 13:00 at +02:00 is 11:00 UTC: earlier than the naive (UTC) 12:00.
    await store.save_thread(
        thread("thr_early", created_at=datetime(2026, 1, 1, 13, 0, tzinfo=plus_two)), alice
    )
    page = await store.load_threads(10, None, "asc", alice)
    assert [t.id for t in page.data] == ["thr_early", "thr_late"]


async def test_page_after_unknown_thread_raises_not_found(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await _save_threads(store, alice, 2)
    with pytest.raises(NotFoundError, match="Thread thr_gone not found"):
        await store.load_threads(10, "thr_gone", "asc", alice)


async def test_saving_a_new_creation_time_moves_the_thread(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    ids = await _save_threads(store, alice, 3)
    await store.save_thread(thread(ids[0], created_at=BASE_TIME + timedelta(days=1)), alice)
    page = await store.load_threads(10, None, "asc", alice)
    assert [t.id for t in page.data] == [ids[1], ids[2], ids[0]]


async def test_delete_thread_removes_thread_items_and_its_attachment_metadata(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    for thread_id in ("thr_1", "thr_2"):
        await store.save_thread(thread(thread_id), alice)
        await store.add_thread_item(
            thread_id, assistant_message(f"msg_{thread_id}", thread_id), alice
        )
    await store.save_attachment(file_attachment("atc_1", thread_id="thr_1"), alice)
    await store.save_attachment(image_attachment("atc_2", thread_id="thr_2"), alice)
    await store.save_attachment(file_attachment("atc_loose"), alice)

    await store.delete_thread("thr_1", alice)

    with pytest.raises(NotFoundError):
        await store.load_thread("thr_1", alice)
    assert (await store.load_thread_items("thr_1", None, 10, "asc", alice)).data == []
    with pytest.raises(NotFoundError):
        await store.load_attachment("atc_1", alice)
    # Everything else is untouched.
    assert (await store.load_thread("thr_2", alice)).id == "thr_2"
    assert len((await store.load_thread_items("thr_2", None, 10, "asc", alice)).data) == 1
    assert (await store.load_attachment("atc_2", alice)).id == "atc_2"
    assert (await store.load_attachment("atc_loose", alice)).id == "atc_loose"
    items = store.database[store.collections.items]
    assert await items.count_documents({Field.THREAD_ID: "thr_1"}) == 0


async def test_deleting_what_does_not_exist_is_not_an_error(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await store.delete_thread("thr_never", alice)
    await store.delete_thread_item("thr_never", "msg_never", alice)
    await store.delete_attachment("atc_never", alice)
