"""Items: every variant round-trips, insert-only adds, upserts, pages, and lookups."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from chatkit.store import NotFoundError
from chatkit.types import ThreadItem

from chatkit_mongo import ItemConflictError, MongoStore
from chatkit_mongo.schema import Field

from .conftest import RequestContext
from .samples import BASE_TIME, assistant_message, every_item, thread


@pytest.mark.parametrize("item", every_item(), ids=lambda item: item.type)
async def test_every_item_variant_round_trips_exactly(
    store: MongoStore[Any], alice: RequestContext, item: ThreadItem
) -> None:
    await store.add_thread_item("thr_1", item, alice)
    loaded = await store.load_item("thr_1", item.id, alice)
    assert loaded == item
    assert type(loaded) is type(item)
    assert loaded.created_at.tzinfo is None  # ChatKit's naive stamps come back naive


async def test_items_page_in_creation_order_to_the_microsecond(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    items = every_item()
    for item in reversed(items):  # insertion order must not matter
        await store.add_thread_item("thr_1", item, alice)
    asc = await store.load_thread_items("thr_1", None, 100, "asc", alice)
    desc = await store.load_thread_items("thr_1", None, 100, "desc", alice)
    assert asc.data == items
    assert desc.data == items[::-1]
    assert (asc.has_more, asc.after) == (False, None)


async def _walk(
    store: MongoStore[Any], ctx: RequestContext, thread_id: str, limit: int, order: str
) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = await store.load_thread_items(thread_id, after, limit, order, ctx)
        assert len(page.data) <= limit
        seen.extend(item.id for item in page.data)
        assert page.after == (page.data[-1].id if page.has_more else None)
        if not page.has_more:
            return seen
        after = page.after


@pytest.mark.parametrize("limit", [1, 3, 4, 12])
async def test_item_pages_walk_every_item_once_with_ties(
    store: MongoStore[Any], alice: RequestContext, limit: int
) -> None:
    # Twelve items on four distinct times: ties must be broken by id, identically in
    # both orders, so that desc is exactly asc reversed.
    ids = []
    for n in range(12):
        item_id = f"msg_{(n * 7) % 12:02d}"
        ids.append(item_id)
        created = BASE_TIME + timedelta(microseconds=n // 3)
        await store.add_thread_item("thr_1", assistant_message(item_id, created_at=created), alice)
    asc = await _walk(store, alice, "thr_1", limit, "asc")
    desc = await _walk(store, alice, "thr_1", limit, "desc")
    assert sorted(asc) == sorted(ids)
    assert desc == asc[::-1]
    for group in range(4):  # within a time, by id
        chunk = asc[group * 3 : group * 3 + 3]
        assert chunk == sorted(chunk)


async def test_page_anchored_after_an_item(store: MongoStore[Any], alice: RequestContext) -> None:
    for n in range(5):
        created = BASE_TIME + timedelta(microseconds=n)
        await store.add_thread_item(
            "thr_1", assistant_message(f"msg_{n}", created_at=created), alice
        )
    page = await store.load_thread_items("thr_1", "msg_1", 2, "asc", alice)
    assert [i.id for i in page.data] == ["msg_2", "msg_3"]
    assert (page.has_more, page.after) == (True, "msg_3")
    page = await store.load_thread_items("thr_1", "msg_3", 2, "desc", alice)
    assert [i.id for i in page.data] == ["msg_2", "msg_1"]
    assert (page.has_more, page.after) == (True, "msg_1")
    page = await store.load_thread_items("thr_1", "msg_1", 5, "desc", alice)
    assert [i.id for i in page.data] == ["msg_0"]
    assert (page.has_more, page.after) == (False, None)


async def test_page_after_unknown_item_raises_not_found(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await store.add_thread_item("thr_1", assistant_message("msg_1"), alice)
    await store.add_thread_item("thr_2", assistant_message("msg_2", "thr_2"), alice)
    with pytest.raises(NotFoundError, match=r"^Item msg_x not found in thread thr_1$"):
        await store.load_thread_items("thr_1", "msg_x", 10, "asc", alice)
    # An item of another thread is no anchor for this one.
    with pytest.raises(NotFoundError, match="Item msg_2 not found in thread thr_1"):
        await store.load_thread_items("thr_1", "msg_2", 10, "asc", alice)


async def test_unknown_thread_has_an_empty_page(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    page = await store.load_thread_items("thr_none", None, 10, "desc", alice)
    assert (page.data, page.has_more, page.after) == ([], False, None)


async def test_add_thread_item_never_overwrites(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    first = assistant_message("msg_1", text="original")
    await store.add_thread_item("thr_1", first, alice)
    with pytest.raises(ItemConflictError, match="msg_1 already exists in thread thr_1"):
        await store.add_thread_item("thr_1", assistant_message("msg_1", text="changed"), alice)
    assert await store.load_item("thr_1", "msg_1", alice) == first
    items = store.database[store.collections.items]
    assert await items.count_documents({Field.ITEM_ID: "msg_1"}) == 1


async def test_re_adding_an_identical_item_is_harmless(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    item = every_item()[0]
    await store.add_thread_item("thr_1", item, alice)
    await store.add_thread_item("thr_1", item.model_copy(deep=True), alice)
    page = await store.load_thread_items("thr_1", None, 10, "asc", alice)
    assert page.data == [item]


async def test_same_item_id_in_two_threads_is_two_items(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await store.add_thread_item("thr_1", assistant_message("msg_1", "thr_1", text="one"), alice)
    await store.add_thread_item("thr_2", assistant_message("msg_1", "thr_2", text="two"), alice)
    one = await store.load_item("thr_1", "msg_1", alice)
    two = await store.load_item("thr_2", "msg_1", alice)
    assert (one.thread_id, two.thread_id) == ("thr_1", "thr_2")


async def test_save_item_inserts_then_replaces(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await store.save_item("thr_1", assistant_message("msg_1", text="draft"), alice)
    final = assistant_message("msg_1", text="final")
    await store.save_item("thr_1", final, alice)
    assert await store.load_item("thr_1", "msg_1", alice) == final
    page = await store.load_thread_items("thr_1", None, 10, "asc", alice)
    assert page.data == [final]


async def test_load_missing_item_raises_chatkits_not_found(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    with pytest.raises(NotFoundError, match=r"^Item msg_x not found in thread thr_1$"):
        await store.load_item("thr_1", "msg_x", alice)


async def test_delete_thread_item_removes_only_that_item(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    for n in range(3):
        created = BASE_TIME + timedelta(microseconds=n)
        await store.add_thread_item(
            "thr_1", assistant_message(f"msg_{n}", created_at=created), alice
        )
    await store.delete_thread_item("thr_1", "msg_1", alice)
    page = await store.load_thread_items("thr_1", None, 10, "asc", alice)
    assert [i.id for i in page.data] == ["msg_0", "msg_2"]
    with pytest.raises(NotFoundError):
        await store.load_item("thr_1", "msg_1", alice)


async def test_the_thread_id_argument_says_where_an_item_goes_and_it_comes_back_as_given(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    """ChatKit's Store contract, as its own store tests use it: an item built for one
    thread, added to (or saved in) another, is stored under the ``thread_id`` argument and
    read back equal to what was given, its own ``thread_id`` field untouched."""
    added = assistant_message("msg_1", "thr_2")
    await store.add_thread_item("thr_1", added, alice)
    assert await store.load_item("thr_1", "msg_1", alice) == added
    assert (await store.load_thread_items("thr_1", None, 10, "asc", alice)).data == [added]
    assert (await store.load_thread_items("thr_2", None, 10, "asc", alice)).data == []
    with pytest.raises(NotFoundError):
        await store.load_item("thr_2", "msg_1", alice)
    await store.add_thread_item("thr_1", added, alice)  # a retry of the same item: no-op
    saved = assistant_message("msg_2", "thr_3")
    await store.save_item("thr_1", saved, alice)
    assert await store.load_item("thr_1", "msg_2", alice) == saved
    items = store.database[store.collections.items]
    assert await items.count_documents({Field.THREAD_ID: "thr_1"}) == 2
    assert await items.count_documents({}) == 2
    await store.delete_thread("thr_1", alice)
    assert await items.count_documents({}) == 0


async def test_thread_metadata_and_items_are_separate_documents(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await store.save_thread(thread(), alice)
    for item in every_item():
        await store.add_thread_item("thr_1", item, alice)
    threads = store.database[store.collections.threads]
    items = store.database[store.collections.items]
    assert await threads.count_documents({}) == 1
    assert await items.count_documents({Field.THREAD_ID: "thr_1"}) == len(every_item())
