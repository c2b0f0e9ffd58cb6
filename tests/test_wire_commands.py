"""The exact commands PyMongo's async driver sends for the store, seen on the wire.

The doubles replace the driver; mockupdb does not: it is a MongoDB wire-protocol server
that hands each command the real ``AsyncMongoClient`` sends to the test, which checks it
and scripts the reply. So these tests prove the filters, sorts, limits and projections
that reach a server, one command per round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from mockupdb import MockupDB
from pymongo import AsyncMongoClient

from chatkit_mongo import MongoStore
from chatkit_mongo.schema import Field

from .conftest import RequestContext
from .samples import BASE_TIME, assistant_message

_T = TypeVar("_T")
_ALICE = RequestContext(user_id="alice")


@dataclass
class Wire:
    server: MockupDB
    store: MongoStore[Any]

    async def next(self, reply: dict[str, Any]) -> dict[str, Any]:
        """The next command the driver sends, answered with ``reply``."""
        request = await asyncio.to_thread(self.server.receives, timeout=10)
        await asyncio.to_thread(request.reply, {**reply, "ok": 1})
        return dict(request.doc)


def _cursor(collection: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
    return {"cursor": {"id": 0, "ns": f"db.{collection}", "firstBatch": documents}}


@pytest.fixture
def server() -> Iterator[MockupDB]:
    server = MockupDB(auto_ismaster={"maxWireVersion": 21, "minWireVersion": 0})
    server.run()
    yield server
    server.stop()


@pytest.fixture
async def wire(server: MockupDB) -> AsyncIterator[Wire]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        server.uri, serverSelectionTimeoutMS=5000
    )
    yield Wire(server, MongoStore(client["db"], auto_create_indexes=False))
    await client.close()


async def _answered(
    wire: Wire, call: Awaitable[_T], *replies: dict[str, Any]
) -> tuple[_T, list[dict[str, Any]]]:
    task = asyncio.ensure_future(call)
    commands = [await wire.next(reply) for reply in replies]
    return await task, commands


async def test_the_store_names_itself_in_the_handshake(server: MockupDB, wire: Wire) -> None:
    injected = wire.store.database.client.options.pool_options.metadata["driver"]
    assert injected["name"].endswith("|chatkit-mongo")
    owned = MongoStore.from_uri(server.uri)
    try:
        driver = owned.database.client.options.pool_options.metadata["driver"]
        assert driver["name"].endswith("|chatkit-mongo")
    finally:
        await owned.close()


async def test_a_page_is_one_find_on_the_owner_thread_sort_key_range(wire: Wire) -> None:
    page, commands = await _answered(
        wire,
        wire.store.load_thread_items("thr_1", None, 20, "desc", _ALICE),
        _cursor("chatkit_items", []),
    )
    assert page.data == []
    (find,) = commands
    assert find["find"] == "chatkit_items"
    assert find["filter"] == {Field.OWNER: "alice", Field.THREAD_ID: "thr_1"}
    assert find["sort"] == {Field.SORT_KEY: -1}
    assert find["limit"] == 21
    # the sort key too: where the range continues past a document the owner cannot read
    assert find["projection"] == {Field.DATA: 1, Field.SORT_KEY: 1, "_id": 0}
    assert "skip" not in find


async def test_a_page_after_an_item_resolves_the_anchor_then_ranges_past_it(wire: Wire) -> None:
    item = assistant_message("msg_2", created_at=BASE_TIME)
    # as a server answers the page's projection: the content and the sort key
    stored = {Field.DATA: item.model_dump(mode="json"), Field.SORT_KEY: "0002 msg_2"}
    page, (anchor, find) = await _answered(
        wire,
        wire.store.load_thread_items("thr_1", "msg_1", 1, "asc", _ALICE),
        _cursor("chatkit_items", [{Field.SORT_KEY: "0001 msg_1"}]),
        _cursor("chatkit_items", [stored, stored]),
    )
    assert anchor["filter"] == {
        Field.OWNER: "alice",
        Field.THREAD_ID: "thr_1",
        Field.ITEM_ID: "msg_1",
    }
    assert (anchor["limit"], anchor["projection"]) == (1, {Field.SORT_KEY: 1, "_id": 0})
    assert find["filter"] == {
        Field.OWNER: "alice",
        Field.THREAD_ID: "thr_1",
        Field.SORT_KEY: {"$gt": "0001 msg_1"},
    }
    assert (find["sort"], find["limit"]) == ({Field.SORT_KEY: 1}, 2)
    assert (page.data, page.has_more, page.after) == ([item], True, "msg_2")


async def test_adding_an_item_is_one_insert_of_the_whole_document(wire: Wire) -> None:
    item = assistant_message("msg_1")
    _, (insert,) = await _answered(
        wire, wire.store.add_thread_item("thr_1", item, _ALICE), {"n": 1}
    )
    assert insert["insert"] == "chatkit_items"
    (document,) = insert["documents"]
    assert document[Field.OWNER] == "alice"
    assert (document[Field.THREAD_ID], document[Field.ITEM_ID]) == ("thr_1", "msg_1")
    assert document[Field.SORT_KEY].endswith(" msg_1")
    assert document[Field.DATA] == item.model_dump(mode="json")
    assert "txnNumber" not in insert  # no transaction is needed or started


async def test_delete_thread_is_three_owner_scoped_deletes(wire: Wire) -> None:
    _, commands = await _answered(
        wire, wire.store.delete_thread("thr_1", _ALICE), {"n": 0}, {"n": 4}, {"n": 1}
    )
    scope = {Field.OWNER: "alice", Field.THREAD_ID: "thr_1"}
    # The thread goes last, so an interrupted delete can always be finished by the user.
    assert [(c["delete"], c["deletes"][0]["q"], c["deletes"][0]["limit"]) for c in commands] == [
        ("chatkit_attachments", scope, 0),
        ("chatkit_items", scope, 0),
        ("chatkit_threads", scope, 0),
    ]
