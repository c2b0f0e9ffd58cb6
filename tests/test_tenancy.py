"""Owners are walls: the same ids under two owners are two independent sets of data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from chatkit.store import NotFoundError

from chatkit_mongo import MongoStore
from chatkit_mongo.schema import MODEL_KINDS, Field

from .conftest import RequestContext
from .samples import assistant_message, file_attachment, thread


async def _populate(store: MongoStore[Any], ctx: RequestContext, text: str) -> None:
    await store.save_thread(thread("thr_1", title=text), ctx)
    await store.add_thread_item("thr_1", assistant_message("msg_1", text=text), ctx)
    await store.save_attachment(file_attachment("atc_1", thread_id="thr_1"), ctx)


async def test_same_ids_under_two_owners_do_not_meet(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    await _populate(store, alice, "alice's")
    await _populate(store, bob, "bob's")
    assert (await store.load_thread("thr_1", alice)).title == "alice's"
    assert (await store.load_thread("thr_1", bob)).title == "bob's"
    alice_item = await store.load_item("thr_1", "msg_1", alice)
    assert alice_item.content[0].text == "alice's"  # type: ignore[union-attr]
    for collection in store.collections.by_kind(MODEL_KINDS).values():
        assert await store.database[collection].count_documents({Field.OWNER: "alice"}) == 1
        assert await store.database[collection].count_documents({Field.OWNER: "bob"}) == 1


async def test_another_owner_cannot_read(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    await _populate(store, alice, "secret")
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_1", bob)
    with pytest.raises(NotFoundError):
        await store.load_item("thr_1", "msg_1", bob)
    with pytest.raises(NotFoundError):
        await store.load_attachment("atc_1", bob)
    assert (await store.load_threads(10, None, "desc", bob)).data == []
    assert (await store.load_thread_items("thr_1", None, 10, "asc", bob)).data == []
    with pytest.raises(NotFoundError):  # alice's thread is no anchor for bob
        await store.load_threads(10, "thr_1", "asc", bob)
    with pytest.raises(NotFoundError):
        await store.load_thread_items("thr_1", "msg_1", 10, "asc", bob)


async def test_another_owner_cannot_overwrite_or_delete(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    await _populate(store, alice, "alice's")
    # bob writes under the same ids: he only ever creates his own documents.
    await store.save_thread(thread("thr_1", title="hijack"), bob)
    await store.save_item("thr_1", assistant_message("msg_1", text="hijack"), bob)
    await store.add_thread_item("thr_1", assistant_message("msg_2", text="hijack"), bob)
    await store.save_attachment(file_attachment("atc_1"), bob)
    await store.delete_thread_item("thr_1", "msg_1", bob)
    await store.delete_attachment("atc_1", bob)
    await store.delete_thread("thr_1", bob)

    assert (await store.load_thread("thr_1", alice)).title == "alice's"
    page = await store.load_thread_items("thr_1", None, 10, "asc", alice)
    assert [(i.id, i.content[0].text) for i in page.data] == [("msg_1", "alice's")]  # type: ignore[union-attr]
    assert (await store.load_attachment("atc_1", alice)).thread_id == "thr_1"


@pytest.mark.parametrize(
    "injection", [{"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, ["thr_1"], 1, None]
)
async def test_operator_injection_through_ids_is_refused(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext, injection: Any
) -> None:
    await _populate(store, alice, "secret")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.load_thread(injection, bob),
        lambda: store.load_item("thr_1", injection, bob),
        lambda: store.load_item(injection, "msg_1", bob),
        lambda: store.load_attachment(injection, bob),
        lambda: store.delete_thread(injection, bob),
        lambda: store.delete_thread_item(injection, "msg_1", bob),
        lambda: store.delete_attachment(injection, bob),
        lambda: store.load_thread_items(injection, None, 10, "asc", bob),
    ]
    if injection is not None:  # None is a valid "no anchor"
        calls += [
            lambda: store.load_threads(10, injection, "asc", bob),
            lambda: store.load_thread_items("thr_1", injection, 10, "asc", bob),
        ]
    for call in calls:
        with pytest.raises(TypeError, match="must be a str"):
            await call()
    assert (await store.load_thread("thr_1", alice)).title == "secret"


async def test_operator_in_owner_is_refused(store: MongoStore[Any]) -> None:
    with pytest.raises(ValueError, match="owner"):
        await store.load_threads(10, None, "asc", {"user_id": {"$ne": None}})
