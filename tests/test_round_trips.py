"""Once warm, each Store call costs one round trip; a page anchored with `after`, two;
a save (save_thread, save_item, save_attachment), two: it reads what it replaces first
(see MongoStore._replace); delete_thread, three. Counted at the collection objects the
store talks to."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from chatkit_mongo import MongoStore

from .conftest import RequestContext
from .round_trip_support import count_round_trips, trips
from .samples import BASE_TIME, assistant_message, file_attachment, thread


@pytest.fixture
async def counted(
    store: MongoStore[Any], alice: RequestContext
) -> tuple[MongoStore[Any], list[str]]:
    return await count_round_trips(store)


async def _measure(log: list[str], call: Callable[[], Any]) -> list[str]:
    log.clear()
    await call()
    return trips(log)


async def test_one_round_trip_per_call(
    counted: tuple[MongoStore[Any], list[str]], alice: RequestContext
) -> None:
    store, log = counted
    for n in range(300):  # cost must not depend on how large the thread is
        created = BASE_TIME + timedelta(microseconds=n)
        await store.add_thread_item(
            "thr_1", assistant_message(f"msg_{n:04d}", created_at=created), alice
        )
    expectations: list[tuple[Callable[[], Any], list[str]]] = [
        (lambda: store.save_thread(thread(), alice), ["thread.find_one", "thread.update_one"]),
        (lambda: store.load_thread("thr_1", alice), ["thread.find_one"]),
        (lambda: store.load_threads(20, None, "desc", alice), ["thread.find"]),
        (
            lambda: store.load_threads(20, "thr_1", "desc", alice),
            ["thread.find_one", "thread.find"],
        ),
        (
            lambda: store.add_thread_item("thr_1", assistant_message("msg_new"), alice),
            ["item.insert_one"],
        ),
        (
            lambda: store.save_item("thr_1", assistant_message("msg_new"), alice),
            ["item.find_one", "item.update_one"],
        ),
        (lambda: store.load_item("thr_1", "msg_0150", alice), ["item.find_one"]),
        (lambda: store.load_thread_items("thr_1", None, 20, "desc", alice), ["item.find"]),
        (
            lambda: store.load_thread_items("thr_1", "msg_0150", 20, "asc", alice),
            ["item.find_one", "item.find"],
        ),
        (lambda: store.delete_thread_item("thr_1", "msg_new", alice), ["item.delete_one"]),
        (
            lambda: store.save_attachment(file_attachment("atc_1", "thr_1"), alice),
            ["attachment.find_one", "attachment.update_one"],
        ),
        (lambda: store.load_attachment("atc_1", alice), ["attachment.find_one"]),
        (lambda: store.delete_attachment("atc_1", alice), ["attachment.delete_one"]),
        (
            lambda: store.delete_thread("thr_1", alice),
            ["attachment.delete_many", "item.delete_many", "thread.delete_many"],
        ),
    ]
    for call, expected in expectations:
        assert await _measure(log, call) == expected


async def test_pages_use_a_keyset_range_never_skip(
    counted: tuple[MongoStore[Any], list[str]], alice: RequestContext
) -> None:
    store, log = counted
    for n in range(50):
        created = BASE_TIME + timedelta(microseconds=n)
        await store.add_thread_item(
            "thr_1", assistant_message(f"msg_{n:02d}", created_at=created), alice
        )
    log.clear()
    after = None
    while True:
        page = await store.load_thread_items("thr_1", after, 7, "asc", alice)
        if not page.has_more:
            break
        after = page.after
    assert "cursor.skip" not in log
    assert log.count("cursor.limit") == log.count("item.find") == 8
