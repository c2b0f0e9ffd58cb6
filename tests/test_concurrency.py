"""Concurrency: many tasks writing one thread and many threads at once, pages read while
writes happen, and two store instances on one database (as two app processes would be).

Nothing may be lost or duplicated, and the order must be the same on every read.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Final

import pytest
from chatkit.types import ThreadItem

from chatkit_mongo import ItemConflictError, MongoStore

from .conftest import RequestContext
from .samples import BASE_TIME, assistant_message, thread

TASKS: Final = 120


def _item(n: int, thread_id: str = "thr_1", text: str = "hello") -> ThreadItem:
    # Three items share each instant, so ties are common and broken by id.
    return assistant_message(
        f"msg_{n:04d}", thread_id, BASE_TIME + timedelta(microseconds=n // 3), text
    )


async def _walk(store: MongoStore[Any], thread_id: str, context: Any, limit: int) -> list[str]:
    """Every item id of the thread, page by page, ascending."""
    ids: list[str] = []
    after = None
    while True:
        page = await store.load_thread_items(thread_id, after, limit, "asc", context)
        ids.extend(item.id for item in page.data)
        if not page.has_more:
            return ids
        after = page.after


async def test_many_writers_on_one_thread_lose_and_duplicate_nothing(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await store.save_thread(thread("thr_1"), alice)
    # Reversed so that insertion order differs from the order pages must give.
    adds = [store.add_thread_item("thr_1", _item(n), alice) for n in reversed(range(TASKS))]
    # No item is both edited and deleted: save_item is an upsert, so an edit racing a
    # delete of the same item may land on either side of it (a real server shows it).
    edits = [
        store.save_item("thr_1", _item(n, text="edited"), alice)
        for n in range(0, TASKS, 5)
        if n % 7 != 1
    ]
    deletes = [store.delete_thread_item("thr_1", _item(n).id, alice) for n in range(1, TASKS, 7)]
    await asyncio.gather(*adds)
    await asyncio.gather(*edits, *deletes)

    kept = [n for n in range(TASKS) if n % 7 != 1]
    expected = [_item(n).id for n in kept]
    for limit in (1, 7, 1000):
        assert await _walk(store, "thr_1", alice, limit) == expected
    for n in kept:
        text = "edited" if n % 5 == 0 else "hello"
        assert await store.load_item("thr_1", _item(n).id, alice) == _item(n, text=text)


async def test_writers_across_threads_and_owners_at_once(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    contexts = (alice, bob)
    writes = [
        store.add_thread_item(f"thr_{n % 4}", _item(n, f"thr_{n % 4}"), contexts[n % 2])
        for n in range(TASKS)
    ]
    writes += [
        store.save_thread(thread(f"thr_{n}"), context) for n in range(4) for context in contexts
    ]
    await asyncio.gather(*writes)
    await asyncio.gather(store.delete_thread("thr_3", alice), store.delete_thread("thr_2", bob))

    for owner, context in enumerate(contexts):
        deleted = "thr_3" if context is alice else "thr_2"
        threads = await store.load_threads(100, None, "asc", context)
        assert [t.id for t in threads.data] == sorted(
            {"thr_0", "thr_1", "thr_2", "thr_3"} - {deleted}
        )
        for t in range(4):
            expected = (
                []
                if f"thr_{t}" == deleted
                else [_item(n).id for n in range(TASKS) if n % 4 == t and n % 2 == owner]
            )
            assert await _walk(store, f"thr_{t}", context, 9) == expected


async def test_pages_read_while_items_are_added_see_each_item_once_in_order(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    """A keyset page continues after a sort key, so items added meanwhile (later ones, as
    ChatKit adds them) neither shift the pages nor show up twice."""
    existing = [_item(n) for n in range(60)]
    for item in existing:
        await store.add_thread_item("thr_1", item, alice)
    later = [_item(n) for n in range(60, 60 + TASKS)]

    async def write_later() -> None:
        for item in later:
            await store.add_thread_item("thr_1", item, alice)
            await asyncio.sleep(0)

    walked, _ = await asyncio.gather(_walk(store, "thr_1", alice, 4), write_later())
    assert len(walked) == len(set(walked))
    assert walked == sorted(walked)
    assert walked[: len(existing)] == [item.id for item in existing]
    assert await _walk(store, "thr_1", alice, 50) == [item.id for item in existing + later]


@pytest.fixture
def second_store(database: Any) -> MongoStore[Any]:
    """Another store on the same database, as a second application process would have."""
    return MongoStore(database)


async def test_two_stores_adding_the_same_items_store_each_once(
    store: MongoStore[Any], second_store: MongoStore[Any], alice: RequestContext
) -> None:
    items = [_item(n) for n in range(TASKS)]
    await asyncio.gather(
        *(store.add_thread_item("thr_1", item, alice) for item in items),
        *(second_store.add_thread_item("thr_1", item, alice) for item in reversed(items)),
    )
    expected = [item.id for item in items]
    assert await _walk(store, "thr_1", alice, 13) == expected
    assert await _walk(second_store, "thr_1", alice, 1000) == expected


async def test_two_stores_adding_different_content_under_one_id_keep_exactly_one(
    store: MongoStore[Any], second_store: MongoStore[Any], alice: RequestContext
) -> None:
    ours, theirs = _item(1, text="ours"), _item(1, text="theirs")
    results = await asyncio.gather(
        store.add_thread_item("thr_1", ours, alice),
        second_store.add_thread_item("thr_1", theirs, alice),
        return_exceptions=True,
    )
    conflicts = [r for r in results if isinstance(r, ItemConflictError)]
    assert len(conflicts) == 1
    assert results.count(None) == 1
    winner = ours if results[0] is None else theirs
    assert await second_store.load_item("thr_1", _item(1).id, alice) == winner
    assert await _walk(store, "thr_1", alice, 5) == [_item(1).id]
